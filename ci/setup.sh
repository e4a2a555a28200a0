#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for cbuild: system packages, Podman's Docker API
# service with ci/containers.conf, and a virtual environment in .venv with cbuild installed.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [ "$(id -u)" != 0 ]; then
  echo "ci/setup.sh installs system packages and starts rootful Podman: run it as root (sudo)." >&2
  exit 1
fi

# gcc/libc6-dev, binutils and patch: unit tests compile ISA fixtures and apply patches on the host.
# chromium: the report test renders `cbuild report`'s page in a real headless browser.
need=(curl podman runc qemu-user-static mmdebstrap python3-venv python3-pip uidmap ca-certificates
  gcc libc6-dev binutils patch chromium)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

sock=/run/podman/podman.sock
if ! curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
  echo "setup: starting podman system service on unix://$sock (config: ci/containers.conf)"
  mkdir -p /run/podman
  CONTAINERS_CONF="$repo/ci/containers.conf" nohup podman system service --time=0 \
    "unix://$sock" >/var/log/cbuild-podman.log 2>&1 &
  for _ in $(seq 50); do
    curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -sf --unix-socket "$sock" http://d/_ping >/dev/null \
    || { echo "podman service did not start; see /var/log/cbuild-podman.log" >&2; exit 1; }
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/cbuild ]; then
  echo "setup: creating .venv with cbuild and its dev tools"
  "$py" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
.venv/bin/pip install -q -e '.[dev]'
echo "setup: ready ($(.venv/bin/cbuild --help >/dev/null && echo cbuild ok), engine at unix://$sock)"
