#!/usr/bin/env bash
# The harness's real Apptainer, seen from the host (installed as `apptainer` and `singularity`
# by ci/apptainer-harness.sh, which sets HARNESS, HARNESS_USER and CONTAINERS_CONF below).
#
# The harness user is not the host's root, so before each call the paths Apptainer will read
# (r:) or write (w:) are made reachable by that user, and the ones it writes made its own, by
# `cbuild-grant` run as root inside the harness (see grant.sh).
set -euo pipefail
: "${HARNESS:?}" "${HARNESS_USER:?}" "${CONTAINERS_CONF:?}"
export CONTAINERS_CONF
paths=()
prev=
for a in "$@"; do
  case $prev in
    --bind | -B)
      IFS=, read -ra binds <<<"$a"
      for b in "${binds[@]}"; do
        IFS=: read -r src _ opt <<<"$b"
        if [ "${opt:-rw}" = ro ]; then paths+=("r:$src"); else paths+=("w:$src"); fi
      done
      ;;
    --workdir | -W | --overlay | -o) paths+=("w:${a%%:*}") ;;
    --env-file) paths+=("r:$a") ;;
  esac
  prev=$a
done
# `apptainer build [options] IMAGE DEFINITION`: the image's folder receives the SIF.
if [ "${1:-}" = build ] && [ $# -ge 3 ]; then
  paths+=("w:$(dirname "${@: -2:1}")" "r:${*: -1}")
fi
if [ ${#paths[@]} -gt 0 ]; then
  podman exec --user root --env "CBUILD_HARNESS_USER=$HARNESS_USER" "$HARNESS" cbuild-grant "${paths[@]}"
fi
envs=()
while IFS= read -r kv; do envs+=(--env "$kv"); done < <(env | grep -E '^(APPTAINER|SINGULARITY)' || true)
# The caller's folder where the harness binds it (the repo, /tmp, the caches), else /tmp: the
# test must happen inside the harness, whose folders are not the host's.
# shellcheck disable=SC2016
exec podman exec -i --user "$HARNESS_USER" "${envs[@]}" "$HARNESS" \
  sh -c 'cd "$1" 2>/dev/null || cd /tmp; shift; exec apptainer "$@"' sh "$PWD" "$@"
