#!/usr/bin/env bash
# dev-slurm-two-nodes.sh - a second, private Slurm cluster of two nodes on this one machine, for the test of a
# cell whose ranks span two nodes (tests/test_slurm.py). It needs the packages `dev-slurm.sh up` installs and a
# running munged (the same key), and leaves the dev-slurm.sh cluster alone: its own config file (clients find it
# through SLURM_CONF), its own ports (6917-6919), state and logs under one directory, no accounting.
# The two nodes are two slurmd processes (Debian's Slurm is built with MULTIPLE_SLURMD: `scontrol show config`)
# named after two names /etc/hosts gives this machine (127.x), so MASTER_ADDR (the first node) resolves too.
#
#   bash scripts/dev-slurm-two-nodes.sh up      # write the config, start slurmctld + 2 slurmd, wait for both
#   bash scripts/dev-slurm-two-nodes.sh status  # exit 0 iff both nodes are idle/mixed/allocated
#   bash scripts/dev-slurm-two-nodes.sh down    # stop the daemons it started (by recorded PID)
#
# Then: NFJOBS_TEST_SLURM_TWO_NODES=$BASE/slurm.conf uv run pytest -m slurm -k two_node
set -uo pipefail

BASE=${NFJOBS_SLURM_TWO_BASE:-/tmp/nfjobs-slurm-two}
# Slurm takes the name `localhost` for this machine's host name, so two other names of 127.x are needed; where
# /etc/hosts has fewer, `up` adds two (as root), marked, so any machine of the CI gets the same two nodes
HOSTS_MARK="# nfjobs dev-slurm-two-nodes.sh"
node_names() { awk '$1 ~ /^127\./ { for (i = 2; i <= NF && $i !~ /^#/; i++) if ($i != "localhost") print $i }' \
                 /etc/hosts | sort -u | head -n 2; }
mapfile -t NODES < <(node_names)
CONF=$BASE/slurm.conf
export SLURM_CONF=$CONF

say() { echo "[dev-slurm-two-nodes] $*"; }
alive() { [ -s "$1" ] && [ -d "/proc/$(cat "$1")" ]; }

cmd_up() {
  set -e
  if [ ${#NODES[@]} -lt 2 ] && [ -w /etc/hosts ]; then
    printf '127.0.1.2 nfjobs-node-a %s\n127.0.1.3 nfjobs-node-b %s\n' "$HOSTS_MARK" "$HOSTS_MARK" >> /etc/hosts
    mapfile -t NODES < <(node_names)
  fi
  [ ${#NODES[@]} = 2 ] || { say "/etc/hosts names ${#NODES[@]} name(s) of 127.x besides localhost; 2 needed"; exit 1; }
  for n in "${NODES[@]}"; do
    getent hosts "$n" >/dev/null || { say "$n does not resolve"; exit 1; }
  done
  mkdir -p "$BASE"/{state,log,pids} "$BASE/spool/${NODES[0]}" "$BASE/spool/${NODES[1]}"
  local node_line="CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN"
  cat > "$CONF" <<EOF
ClusterName=nfjobstwo
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/pids/slurmctld.pid
SlurmdPidFile=$BASE/pids/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
SlurmctldPort=6917
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=${NODES[0]} NodeHostname=${NODES[0]} NodeAddr=127.0.0.1 Port=6918 $node_line
NodeName=${NODES[1]} NodeHostname=${NODES[1]} NodeAddr=127.0.0.1 Port=6919 $node_line
PartitionName=two Nodes=${NODES[0]},${NODES[1]} Default=YES MaxTime=INFINITE State=UP
EOF
  alive "$BASE/pids/slurmctld.pid" || slurmctld -f "$CONF" -i </dev/null >/dev/null 2>>"$BASE/log/launch.log"
  for n in "${NODES[@]}"; do
    alive "$BASE/pids/slurmd-$n.pid" || slurmd -f "$CONF" -N "$n" </dev/null >/dev/null 2>>"$BASE/log/launch.log"
  done
  for _ in $(seq 1 150); do cmd_status >/dev/null 2>&1 && break; sleep 0.2; done
  cmd_status && say "up: export SLURM_CONF=$CONF"
}

cmd_status() {
  local states
  states=$(sinfo -h -N -o %T 2>/dev/null | sort -u | tr '\n' ' ')
  echo "nodes: ${states:-none}"
  [ "$(sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated|completing)$')" = 2 ]
}

cmd_down() {
  local f
  for f in "$BASE"/pids/*.pid; do
    alive "$f" && { say "stopping pid $(cat "$f") ($(basename "$f" .pid))"; kill -TERM "$(cat "$f")"; }
    rm -f "$f"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  status) cmd_status ;;
  down) cmd_down ;;
  *) echo "usage: bash scripts/dev-slurm-two-nodes.sh up|status|down" >&2; exit 2 ;;
esac
