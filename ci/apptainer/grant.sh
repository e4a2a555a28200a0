#!/bin/sh
# cbuild-grant, run as root inside the Apptainer harness before each call of the wrapper:
# `w:PATH` folders become the harness user's (Apptainer writes there as that user; the host's
# root still reads and removes everything), and every folder above each PATH gets o+x (search,
# not read) so that the user can reach it: pytest's /tmp/pytest-of-root is 0700, for one.
set -eu
uid=$(id -u "${CBUILD_HARNESS_USER:-builder}")
for arg in "$@"; do
  p=${arg#?:}
  [ -e "$p" ] || continue
  case $arg in
    w:*) if [ -d "$p" ] && [ "$(stat -c %u "$p")" != "$uid" ]; then chown "$uid:$uid" "$p"; fi ;;
  esac
  d=$(dirname "$p")
  while [ "$d" != / ]; do
    [ $((0$(stat -c %a "$d") & 1)) = 1 ] || chmod o+x "$d"
    d=$(dirname "$d")
  done
done
