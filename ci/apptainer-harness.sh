#!/usr/bin/env bash
# A real Apptainer for machines that have none (Debian 12 has no package; see DESIGN.md,
# "Apptainer"). Apptainer 1.4 from Debian sid runs in a privileged Podman container made from a
# sid root filesystem, as an unprivileged user with /etc/subuid and /etc/subgid entries (as root
# it aborts: it asks for CAP_SYS_RESOURCE, which this VM does not grant).
#
#   ci/apptainer-harness.sh start    build the harness image if its definition changed, (re)start it
#   ci/apptainer-harness.sh env      print exports: the wrappers first on PATH, the SIF cache
#   ci/apptainer-harness.sh status   say whether it runs, its Apptainer version and its binds
#   ci/apptainer-harness.sh stop     remove the container (the image stays, cached by hash)
#
# The host sees Apptainer through two small wrapper scripts, `apptainer` and `singularity`
# (spython calls the latter), that `podman exec` the real one as the harness user. Every path
# cbuild and the tests hand to Apptainer is bound at the same path inside the harness: /tmp, the
# repository, the cbuild cache, the host's CA bundle and QEMU binary, and CBUILD_HARNESS_BINDS
# (colon-separated) for more.
#
# The harness user is not the host's root: before each call the wrapper (ci/apptainer/wrapper.sh)
# hands the folders Apptainer writes to (writable --bind sources, --workdir, --overlay, a build's
# output folder) to that user and lets it pass the folders above what it reads
# (ci/apptainer/grant.sh). The host's root still reads and removes everything written there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/ci/containers.conf}
name=cbuild-apptainer
user=builder
uid=1000
cache=${CBUILD_CACHE:-$HOME/.cache/cbuild}
state=$cache/apptainer-harness
# The SIF cache lives outside /root: a --fakeroot build binds its user's home over /root.
sifs=${CBUILD_APPTAINER_IMAGES:-/var/cache/cbuild/apptainer}
mirror=http://deb.debian.org/debian

# The harness definition: its hash names the image, so a change rebuilds it and nothing else does.
# fuse2fs/squashfuse mount SIFs without root; uidmap gives newuidmap for --fakeroot.
# `nosubuid` is a second user without subordinate ids, for the test of that refusal.
packages=apptainer,squashfs-tools,debootstrap,fuse2fs,squashfuse,uidmap,ca-certificates
hooks=(
  "chroot \"\$1\" useradd -m -u $uid -s /bin/bash $user"
  "chroot \"\$1\" useradd -m -u $((uid + 1)) -s /bin/bash nosubuid"
  "echo $user:100000:65536 > \"\$1/etc/subuid\"; echo $user:100000:65536 > \"\$1/etc/subgid\""
)
definition="sid $mirror $packages ${hooks[*]}"
hash=$(printf '%s' "$definition" | sha256sum | cut -c1-16)
image=localhost/cbuild-apptainer-harness:$hash

binds() {
  local qemu ca
  qemu=$(command -v qemu-x86_64-static || command -v qemu-x86_64 || true)
  ca=/etc/ssl/certs/ca-certificates.crt
  printf '%s\n' /tmp "$repo" "$cache" "$sifs"
  # QEMU at its path and its resolved path: cbuild may name either.
  [ -n "$qemu" ] && printf '%s\n' "$qemu" "$(readlink -f "$qemu")"
  [ -f "$ca" ] && printf '%s\n' "$ca"
  if [ -n "${CBUILD_HARNESS_BINDS:-}" ]; then tr ':' '\n' <<<"$CBUILD_HARNESS_BINDS"; fi
}

running() {
  [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]
}

build_image() {
  podman image exists "$image" && return 0
  command -v mmdebstrap >/dev/null || { echo "harness: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
  local tmp
  tmp=$(mktemp -d /var/tmp/cbuild-harness-XXXXXX)
  echo "harness: bootstrapping Debian sid with $packages (about 1 minute)" >&2
  local args=(--variant=minbase --include="$packages"
    --aptopt='Acquire::Check-Valid-Until "false"')
  for h in "${hooks[@]}"; do args+=(--customize-hook="$h"); done
  if ! mmdebstrap "${args[@]}" sid "$tmp/rootfs.tar" "$mirror" >"$tmp/log" 2>&1; then
    tail -20 "$tmp/log" >&2
    echo "harness: mmdebstrap of sid failed (is $mirror reachable?)" >&2
    rm -rf "$tmp"
    exit 1
  fi
  podman import -q "$tmp/rootfs.tar" "$image" >/dev/null
  rm -rf "$tmp"
  echo "harness: image $image" >&2
}

# Wrappers on the host: ci/apptainer/wrapper.sh with the harness's name and user filled in;
# bin-nosubuid/ runs as the user without subordinate ids (the tests' refusal case).
wrappers() {
  local dir who tool
  for who in "$user" nosubuid; do
    dir=$state/bin
    [ "$who" = "$user" ] || dir=$state/bin-nosubuid
    mkdir -p "$dir"
    for tool in apptainer singularity; do
      {
        echo '#!/usr/bin/env bash'
        echo "HARNESS=$name HARNESS_USER=$who CONTAINERS_CONF=$CONTAINERS_CONF"
        tail -n +2 "$repo/ci/apptainer/wrapper.sh"
      } >"$dir/$tool.tmp"
      chmod +x "$dir/$tool.tmp"
      mv "$dir/$tool.tmp" "$dir/$tool"
    done
  done
  podman exec -i "$name" sh -c 'cat >/usr/local/sbin/cbuild-grant && chmod 755 /usr/local/sbin/cbuild-grant' \
    <"$repo/ci/apptainer/grant.sh"
}

start() {
  command -v podman >/dev/null || { echo "harness: podman is missing (run ci/setup.sh)" >&2; exit 1; }
  build_image
  local want have vols=()
  want=$(printf '%s %s' "$image" "$(binds | sort -u | tr '\n' ' ')")
  have=$(podman inspect -f '{{index .Config.Labels "org.cbuild.harness"}}' "$name" 2>/dev/null || true)
  if running && [ "$want" = "$have" ]; then
    wrappers
    return 0
  fi
  podman rm -f "$name" >/dev/null 2>&1 || true
  mkdir -p "$cache" "$sifs"
  while IFS= read -r p; do [ -e "$p" ] && vols+=(-v "$p:$p"); done < <(binds | sort -u)
  podman run -d --name "$name" --privileged --network host --label "org.cbuild.harness=$want" \
    "${vols[@]}" "$image" sleep infinity >/dev/null
  # /dev/fuse is root's alone in a privileged container; Apptainer mounts SIFs through it.
  podman exec "$name" chmod 666 /dev/fuse
  wrappers
  # The harness's own folders above the binds (its /root is 0700) must let its user pass.
  mapfile -t bound < <(binds | sort -u)
  podman exec --user root "$name" cbuild-grant "${bound[@]/#/r:}"
  echo "harness: $("$state/bin/apptainer" --version) running as $user in container $name" >&2
}

case ${1:-} in
  start) start ;;
  stop) podman rm -f "$name" >/dev/null 2>&1 || true ;;
  env)
    echo "export PATH=$state/bin:\$PATH"
    echo "export CBUILD_APPTAINER_IMAGES=$sifs"
    ;;
  status)
    if running; then
      echo "running: $("$state/bin/apptainer" --version) (image $image)"
      binds | sort -u | sed 's/^/  bound: /'
    else
      echo "not running (ci/apptainer-harness.sh start)"; exit 1
    fi ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
