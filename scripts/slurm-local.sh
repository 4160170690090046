#!/usr/bin/env bash
# A one-node Slurm in a folder, for tests and for trying `fer sweep
# --launcher slurm` on one machine (Debian's slurm-wlm and munge, started
# without systemd; see docs/sweeps.md). Run as root.
#   scripts/slurm-local.sh up DIR     # prints the SLURM_CONF to export
#   scripts/slurm-local.sh down DIR   # stops what `up` started
# The config, state, spool, logs and pids live in DIR, on free ports, so two
# clusters never share a queue. munge keeps its system paths; `up` starts
# munged if it is not running, and `down` stops it only if `up` started it.
set -euo pipefail
cmd=${1:?usage: slurm-local.sh up|down DIR}
dir=${2:?usage: slurm-local.sh up|down DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null || true; }

case "$cmd" in
up)
  for b in slurmctld slurmd sbatch munged; do
    command -v "$b" >/dev/null || { echo "slurm-local: $b not found; apt-get install slurm-wlm munge (make setup does)" >&2; exit 1; }
  done
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged
    touch "$dir/munged.started"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat > "$dir/slurm.conf" <<CONF
ClusterName=fer-local
SlurmctldHost=$(hostname -s)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
MpiDefault=none
$(slurmd -C | head -1)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld
  slurmd
  for _ in $(seq 100); do
    sinfo -h -o %t 2>/dev/null | grep -q idle && { echo "$SLURM_CONF"; exit 0; }
    sleep 0.2
  done
  echo "slurm-local: the node did not come up; logs in $dir/log" >&2
  exit 1
  ;;
down)
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  if [ -f "$dir/munged.started" ]; then
    stop_pid /run/munge/munged.pid
    rm -f "$dir/munged.started"
  fi
  ;;
*) echo "usage: slurm-local.sh up|down DIR" >&2; exit 2 ;;
esac
