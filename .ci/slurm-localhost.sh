#!/usr/bin/env bash
# A real single-node SLURM on localhost, for the cluster tests (run as root).
#   .ci/slurm-localhost.sh start   install (Debian packages) if needed, configure, start with no
#                                  jobs left from an earlier run, wait until idle
#   .ci/slurm-localhost.sh stop    stop slurmd, slurmctld and munged by the PIDs in their pid files
# No accounting database: the Snakemake profile queries job states with squeue.
set -euo pipefail

RUN=/run/slurm
SPOOL=/var/spool/slurmctld
LOGS=/var/log/slurm

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
  local host
  host=$(hostname -s)
  getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts

  mkdir -p "$RUN" "$SPOOL" "$LOGS" /var/spool/slurmd /etc/slurm /run/munge
  chown slurm:slurm "$RUN" "$SPOOL" "$LOGS"
  chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }

  # The node as slurmd sees it, with some memory left for the system.
  local node mem
  node=$(slurmd -C | head -n 1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem - 512))/" <<<"$node")

  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=pcrl-ci
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$SPOOL
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

  # A machine that ran this before may still have daemons up, or jobs saved in the state
  # folder from a run that was cut off: slurmctld would requeue those, and the node would
  # stay allocated to them. Stop old daemons, then start with cleared state (-c) and no
  # job steps left in slurmd's spool.
  stop
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmstepd 2>/dev/null || true
  find /var/spool/slurmd -mindepth 1 -maxdepth 1 -name "${host}_*" -delete 2>/dev/null || true
  munge -n >/dev/null 2>&1 || su -s /bin/sh munge -c "munged"
  slurmctld -c
  slurmd -c
  local state
  for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null | head -n 1)
    [ "$state" = "idle" ] && { echo "SLURM is up on $host"; return 0; }
    case "$state" in
      down*|drain*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
  done
  echo "SLURM did not become idle" >&2
  sinfo >&2 || true
  return 1
}

stop() {
  local pid_file pid
  for pid_file in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" /run/munge/munged.pid; do
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
