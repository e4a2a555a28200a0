#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for `cbuild batch --slurm` and its tests:
# munge, then slurmctld and slurmd with this host as both controller and only compute node.
#   ci/slurm-setup.sh start    install (slurm-wlm, munge) and start what is not running yet
#   ci/slurm-setup.sh stop     stop the daemons this script started (by their pid files)
#   ci/slurm-setup.sh status   exit 0 when the node takes jobs, 3 otherwise
# Runs as root (Debian 12). There is no systemd here, so the daemons are started directly.
# An /etc/slurm/slurm.conf that this script did not write is never touched: a machine that is
# part of a real cluster keeps its configuration.
set -euo pipefail

conf=/etc/slurm/slurm.conf
marker="# written by cbuild ci/slurm-setup.sh"
state=/var/lib/slurm
logs=/var/log/slurm
node=$(hostname -s)
ctld_pid=/run/slurmctld.pid
slurmd_pid=/run/slurmd.pid
munge_pid=/run/munge/munged.pid

log() { echo "slurm-setup: $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "run as root: it installs packages and starts the munge and Slurm daemons"
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in slurm-wlm munge; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  apt-get update -qq
  # No init system runs the services here; policy-rc.d keeps the packages from trying.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${missing[@]}" >/dev/null
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

render_conf() {
  local cpus mem
  cpus=$(nproc)
  # Leave 10% (at least 512 MB) to the system; memory is a consumable resource below.
  mem=$(awk '/^MemTotal:/ {m = int($2 / 1024); r = int(m / 10); if (r < 512) r = 512; print m - r}' /proc/meminfo)
  cat <<EOF
$marker
# Single node: this host ($node) is controller and compute node. Re-rendered by 'start'.
ClusterName=cbuild
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroup hierarchy to rely on in CI VMs and containers: plain process tracking.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# A job that asks for no memory gets one CPU's share instead of the whole node.
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
# Refuse at sbatch time what the node can never run, instead of leaving it pending forever.
EnforcePartLimits=ALL
StateSaveLocation=$state/slurmctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
# No slurmdbd here, so sacct has no data: scontrol keeps finished jobs for an hour instead.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
SchedulerType=sched/backfill
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

node_state() { sinfo -h -n "$node" -o %T 2>/dev/null | head -n1; }

ready() {
  scontrol ping 2>/dev/null | grep -q "is UP" || return 1
  case "$(node_state)" in
    idle* | mixed* | alloc* | completing*) return 0 ;;
    *) return 1 ;;
  esac
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating the munge key"
    mungekey -c -k /etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  if ! alive "$munge_pid"; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
  fi
  for _ in $(seq 50); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "munged does not answer; see /var/log/munge/munged.log"
  exit 1
}

start() {
  need_root
  if [ -e "$conf" ] && ! grep -qxF "$marker" "$conf"; then
    if ready; then
      log "Slurm already runs here with its own $conf; using it"
      return 0
    fi
    log "$conf was not written by this script and Slurm does not answer: not touching it"
    exit 1
  fi
  install_packages
  start_munge

  mkdir -p /etc/slurm "$state/slurmctld" "$state/slurmd" "$logs"
  local new
  new=$(render_conf)
  if [ ! -e "$conf" ] || [ "$new" != "$(cat "$conf")" ]; then
    log "writing $conf (node $node, $(nproc) CPUs)"
    printf '%s\n' "$new" >"$conf"
    # Daemons started with an older file would disagree with it: restart them.
    stop_daemons
  fi

  if ! alive "$ctld_pid"; then
    log "starting slurmctld"
    slurmctld
  fi
  if ! alive "$slurmd_pid"; then
    log "starting slurmd"
    slurmd
  fi
  for _ in $(seq 150); do
    if ready; then
      log "ready: $(sinfo -h -o '%P %D node(s) %c CPUs %T')"
      return 0
    fi
    # A node left down or drained by an earlier run (the VM stopped under it) is fine now.
    case "$(node_state)" in
      down* | drain*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  log "Slurm did not become ready; see $logs/slurmctld.log and $logs/slurmd.log"
  sinfo -N -l >&2 || true
  exit 1
}

stop_pidfile() {
  local name=$1 pidfile=$2
  alive "$pidfile" || return 0
  local pid
  pid=$(cat "$pidfile")
  log "stopping $name ($pid)"
  kill "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "$name ($pid) did not stop"
  return 1
}

stop_daemons() {
  stop_pidfile slurmd "$slurmd_pid"
  stop_pidfile slurmctld "$ctld_pid"
}

stop() {
  need_root
  stop_daemons
  stop_pidfile munged "$munge_pid"
}

status() {
  local rc=0
  for d in "munged:$munge_pid" "slurmctld:$ctld_pid" "slurmd:$slurmd_pid"; do
    if alive "${d#*:}"; then echo "${d%%:*}: running ($(cat "${d#*:}"))"; else echo "${d%%:*}: stopped"; fi
  done
  if ready; then
    echo "slurm: ready ($(sinfo -h -o '%P %D node(s) %c CPUs %T'))"
  else
    echo "slurm: not ready"
    rc=3
  fi
  return "$rc"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
