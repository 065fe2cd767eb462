#!/usr/bin/env bash
# dev-slurm.sh - a real single-node Slurm cluster on localhost for nfjobs' integration tests and for trying
# sweeps locally. Debian 12 (bookworm), run as root, no systemd needed: munged + [MariaDB + slurmdbd] +
# slurmctld + slurmd run as plain daemons; "GPUs" are gres entries backed by /dev/null.
#
#   bash scripts/dev-slurm.sh up      # install packages if needed, write config, start, wait until the node
#                                     # is idle and `srun true` works; idempotent (reuses running daemons)
#   bash scripts/dev-slurm.sh status  # daemons, node state, accounts; exit 0 iff the cluster is usable
#   bash scripts/dev-slurm.sh down    # cancel this cluster's jobs, stop ONLY the daemons this script started
#                                     # (by recorded PID, never pkill); keeps state, DB, logs and config
#   bash scripts/dev-slurm.sh purge   # down, then delete state/DB/logs and the /etc/slurm files it wrote
#
# After `up`: partitions `cpu` (default) and `gpu`, account `ci` (root is associated with it), unknown accounts
# are rejected at submission (AccountingStorageEnforce=associations), sacct works. Tuned for tests: an eligible
# job starts within ~2 s (sched_interval=2, bf_interval=2) and a requeued job may restart after 11 s instead of
# Slurm's 121 s. Time limits and --signal warnings still follow slurmctld's fixed ~30 s tick (docs/slurm-notes.md).
#
# Knobs (environment variables):
#   NFJOBS_SLURM_BASE        state/log/pid dir, must be reachable by user mysql (default /tmp/nfjobs-slurm)
#   NFJOBS_SLURM_ACCOUNTING  dbd  = slurmdbd+MariaDB, sacct works (default)
#                            none = no accounting; sacct fails ("Slurm accounting storage is disabled")
#   NFJOBS_SLURM_ACCOUNTS    accounts to create (dbd mode), space separated; root is added to each (default "ci")
#   NFJOBS_SLURM_ENFORCE     1 = AccountingStorageEnforce=associations: unknown --account rejected (default 1)
#   NFJOBS_SLURM_CPUS        advertised CPUs of the fake node (default 8; real cores are oversubscribed)
#   NFJOBS_SLURM_MEM_MB      advertised RealMemory in MB (default 32000)
#   NFJOBS_SLURM_GPUS        fake GPUs (gres/gpu backed by symlinks to /dev/null) (default 4; 0 = none)
#   NFJOBS_SLURM_MAX_ARRAY   MaxArraySize (default 1001, Slurm's own default; array indices < this)
#   NFJOBS_SLURM_REQUEUE_DELAY_S  seconds a requeued job waits before it may start again (AuthInfo=cred_expire;
#                            Slurm's default is 120; default here 10 so requeue tests take seconds, not minutes)
#   NFJOBS_SLURM_DB_PORT     TCP port of the private MariaDB on 127.0.0.1 (default 3307)
#   NFJOBS_SLURM_WAIT_S      seconds to wait for each daemon / the node (default 60)
#   NFJOBS_SLURM_NO_INSTALL  1 = never call apt-get; fail if packages are missing (default 0)
set -uo pipefail

BASE=${NFJOBS_SLURM_BASE:-/tmp/nfjobs-slurm}
ACCOUNTING=${NFJOBS_SLURM_ACCOUNTING:-dbd}
ACCOUNTS=${NFJOBS_SLURM_ACCOUNTS:-ci}
ENFORCE=${NFJOBS_SLURM_ENFORCE:-1}
NODE_CPUS=${NFJOBS_SLURM_CPUS:-8}
NODE_MEM_MB=${NFJOBS_SLURM_MEM_MB:-32000}
NODE_GPUS=${NFJOBS_SLURM_GPUS:-4}
MAX_ARRAY=${NFJOBS_SLURM_MAX_ARRAY:-1001}
REQUEUE_DELAY_S=${NFJOBS_SLURM_REQUEUE_DELAY_S:-10}
DB_PORT=${NFJOBS_SLURM_DB_PORT:-3307}
WAIT_S=${NFJOBS_SLURM_WAIT_S:-60}
NO_INSTALL=${NFJOBS_SLURM_NO_INSTALL:-0}
CLUSTER=localci
NODE=localhost
DB_PASS=slurm-ci-local          # only reachable on 127.0.0.1 of a throw-away machine
MARK="# written by nfjobs scripts/dev-slurm.sh"
CONF_FILES=(/etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf)

PIDS=$BASE/pids; LOG=$BASE/log; STATE=$BASE/state; SPOOL=$BASE/spool; DB=$BASE/mariadb; FAKEGPU=$BASE/fakegpu
T0=$(date +%s%3N)
say() { local ms=$(( $(date +%s%3N) - T0 )); printf '[dev-slurm %4d.%ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"; }
die() { say "ERROR: $*"; for f in "$LOG"/*.log "$DB"/mariadbd.log; do [ -f "$f" ] && { echo "--- tail $f"; tail -n 15 "$f"; }; done; exit 1; }

# alive PIDFILE COMM -> true if PIDFILE holds the PID of a live process whose comm is COMM
alive() { local pid; [ -s "$1" ] || return 1; pid=$(cat "$1" 2>/dev/null) || return 1
          [[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; }
# stop_pid PIDFILE COMM -> TERM, wait up to 15 s, then KILL the recorded process, only if it still runs COMM
stop_pid() { local pid _
  if ! alive "$1" "$2"; then rm -f "$1"; return 0; fi
  pid=$(cat "$1"); say "stopping $2 pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 75); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  if [ -d "/proc/$pid" ]; then say "$2 pid $pid ignored TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$1"; }
# launch CMD... -> run CMD with stdin/stdout on /dev/null, stderr appended to $LOG/launch.log and every other
# inherited fd closed, so no daemon keeps a CI runner's (or pytest's) pipe open
closefds()  { local f fd; for f in /proc/"$BASHPID"/fd/*; do fd=${f##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done; }
launch()    { ( closefds; exec "$@" </dev/null >/dev/null 2>>"$LOG/launch.log" ); }    # self-daemonizing
launch_bg() { ( closefds; exec "$@" </dev/null >/dev/null 2>>"$LOG/launch.log" ) & }  # one background process
# wait_for DESCRIPTION COMMAND... -> poll COMMAND every 0.2 s for up to WAIT_S seconds
wait_for() { local what=$1 end=$((SECONDS + WAIT_S)); shift
             until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $end ] || die "timeout waiting for $what"; sleep 0.2; done; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }
node_ready() {
  case "$(node_state)" in
    idle|mixed|allocated|completing) return 0 ;;
    *drain*|down*|fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
  esac
  return 1; }

# ============================================================================================== up
cmd_up() {
  set -e
  need_root
  case "$ACCOUNTING" in dbd|none) ;; *) die "NFJOBS_SLURM_ACCOUNTING must be dbd or none";; esac

  # ------------------------------------------------------------ 1. packages
  local PKGS=(munge slurmctld slurmd slurm-client) MISSING=() p
  [ "$ACCOUNTING" = dbd ] && PKGS+=(slurmdbd mariadb-server)
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || MISSING+=("$p")
  done
  if [ ${#MISSING[@]} -gt 0 ]; then
    [ "$NO_INSTALL" = 1 ] && die "missing packages: ${MISSING[*]}"
    say "installing ${MISSING[*]}"
    local OWN_POLICY=0 APTLOG=${TMPDIR:-/tmp}/nfjobs-slurm-apt.log
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep postinst scripts from starting services themselves
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; OWN_POLICY=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$APTLOG" 2>&1 || true
    if ! apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >>"$APTLOG" 2>&1; then
      [ $OWN_POLICY = 1 ] && rm -f /usr/sbin/policy-rc.d
      cat "$APTLOG"; die "apt-get install failed"
    fi
    [ $OWN_POLICY = 1 ] && rm -f /usr/sbin/policy-rc.d
    say "installed: $(dpkg-query -W -f='${Package}=${Version} ' "${PKGS[@]}")"
  fi

  mkdir -p "$PIDS" "$LOG" "$STATE" "$SPOOL" "$FAKEGPU"

  # ------------------------------------------------------------ 2. config files
  local GRES_NODE="" GRES_LINE="" ACCT_CONF i
  if [ "$NODE_GPUS" -gt 0 ]; then
    for i in $(seq 0 $((NODE_GPUS - 1))); do ln -sfn /dev/null "$FAKEGPU/nvidia$i"; done
    GRES_NODE=" Gres=gpu:$NODE_GPUS"
    if [ "$NODE_GPUS" -eq 1 ]; then GRES_LINE="NodeName=$NODE Name=gpu File=$FAKEGPU/nvidia0"
    else GRES_LINE="NodeName=$NODE Name=gpu File=$FAKEGPU/nvidia[0-$((NODE_GPUS - 1))]"; fi
  fi
  if [ "$ACCOUNTING" = dbd ]; then
    ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
    [ "$ENFORCE" = 1 ] && ACCT_CONF+=$'\nAccountingStorageEnforce=associations'
  else
    ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi

  local NEW_CONF NEW_GRES NEW_DBD
  NEW_CONF=$(cat <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$REQUEUE_DELAY_S
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT_CONF
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MaxArraySize=$MAX_ARRAY
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=$NODE_MEM_MB$GRES_NODE State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
)
  NEW_GRES=$(printf '%s\nAutoDetect=off\n%s\n' "$MARK" "$GRES_LINE")
  NEW_DBD=$(cat <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$PIDS/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
)
  mkdir -p /etc/slurm
  CHANGED=0
  put() { # put FILE CONTENT MODE -> write only when different (backing up a file we did not write); CHANGED=1
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then
      if [ -f "$1" ] && [ "$(head -n1 "$1")" != "$MARK" ]; then cp -p "$1" "$1.orig.$(date +%s)"; fi
      printf '%s\n' "$2" > "$1"; chmod "$3" "$1"; CHANGED=1
    fi; }
  put /etc/slurm/slurm.conf "$NEW_CONF" 644
  put /etc/slurm/gres.conf "$NEW_GRES" 644
  [ "$ACCOUNTING" = dbd ] && put /etc/slurm/slurmdbd.conf "$NEW_DBD" 600
  if [ $CHANGED = 1 ]; then
    say "config written to /etc/slurm (restarting any slurm daemons this script had started)"
    stop_pid "$PIDS/slurmd.pid" slurmd; stop_pid "$PIDS/slurmctld.pid" slurmctld; stop_pid "$PIDS/slurmdbd.pid" slurmdbd
  fi

  # ------------------------------------------------------------ 3. munge
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge; mungekey --create --keyfile=/etc/munge/munge.key --force
  fi
  chown -R munge:munge /etc/munge; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  local d
  for d in /run/munge /var/log/munge /var/lib/munge; do mkdir -p "$d"; chown munge:munge "$d"; done
  chmod 755 /run/munge; chmod 700 /var/log/munge /var/lib/munge
  if alive "$PIDS/munged.pid" munged || { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }; then
    say "munged already running ($(alive "$PIDS/munged.pid" munged && echo "ours" || echo "not ours: down leaves it"))"
  else
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    launch runuser -u munge -- /usr/sbin/munged || die "munged failed to start"
    wait_for munged sh -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$PIDS/munged.pid"
    say "munged started pid $(cat "$PIDS/munged.pid")"
  fi

  # ------------------------------------------------------------ 4. MariaDB + slurmdbd
  if [ "$ACCOUNTING" = dbd ]; then
    local SOCK=$DB/mysqld.sock a
    mkdir -p "$DB"; chown mysql:mysql "$DB"
    runuser -u mysql -- test -w "$DB" || die "user mysql cannot reach $DB: put NFJOBS_SLURM_BASE under /tmp or /var/tmp"
    if [ ! -d "$DB/data/mysql" ]; then
      say "initialising private MariaDB datadir $DB/data"
      mariadb-install-db --user=mysql --datadir="$DB/data" --auth-root-authentication-method=socket \
        --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
    fi
    if ! alive "$DB/mariadbd.pid" mariadbd; then
      launch_bg setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$SOCK" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$DB/mariadbd.pid" --log-error="$DB/mariadbd.log" \
        --skip-log-bin --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900
      wait_for mariadbd mariadb-admin --socket="$SOCK" ping
      wait_for mariadbd-pidfile alive "$DB/mariadbd.pid" mariadbd
      say "mariadbd started pid $(cat "$DB/mariadbd.pid") (127.0.0.1:$DB_PORT)"
    fi
    mariadb --socket="$SOCK" -u root <<EOF || die "creating slurm DB user failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
    if ! alive "$PIDS/slurmdbd.pid" slurmdbd; then
      launch /usr/sbin/slurmdbd || die "slurmdbd failed to start"
      wait_for slurmdbd sacctmgr -n show cluster
      say "slurmdbd started pid $(cat "$PIDS/slurmdbd.pid")"
    fi
    sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    for a in $ACCOUNTS; do
      sacctmgr -n -P show account "$a" format=account | grep -qx "$a" \
        || sacctmgr -i add account "$a" Description=ci Organization=ci >/dev/null
      sacctmgr -n -P show assoc where cluster="$CLUSTER" account="$a" user=root format=user | grep -qx root \
        || sacctmgr -i add user root account="$a" cluster="$CLUSTER" >/dev/null
    done
  fi

  # ------------------------------------------------------------ 5. slurmctld + slurmd
  if ! alive "$PIDS/slurmctld.pid" slurmctld; then
    launch /usr/sbin/slurmctld || die "slurmctld failed to start"
    wait_for slurmctld sh -c "scontrol ping | grep -q UP"
    say "slurmctld started pid $(cat "$PIDS/slurmctld.pid")"
  fi
  if ! alive "$PIDS/slurmd.pid" slurmd; then
    launch /usr/sbin/slurmd -N "$NODE" || die "slurmd failed to start"
    wait_for slurmd-pidfile alive "$PIDS/slurmd.pid" slurmd
    say "slurmd started pid $(cat "$PIDS/slurmd.pid")"
  fi
  wait_for "node $NODE idle" node_ready
  timeout 30 srun -p cpu -t 1 true </dev/null || die "smoke test 'srun true' failed"
  say "cluster ready: $(sinfo -h -N -o '%N %c CPUs %m MB %G %T' | head -n1); accounting=$ACCOUNTING accounts=$ACCOUNTS"
}

# ============================================================================================== down / purge
cmd_down() {
  need_root
  local JOBS LEFT _
  # 1. cancel all jobs of this private cluster and wait for them to leave (their steps are slurmd's children)
  if alive "$PIDS/slurmctld.pid" slurmctld; then
    JOBS=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${JOBS// /}" ]; then
      say "cancelling jobs: $JOBS"; scancel $JOBS 2>/dev/null || true
      for _ in $(seq 1 100); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    if alive "$PIDS/slurmd.pid" slurmd; then   # step processes that survived the cancel, as listed by our slurmd
      LEFT=$(scontrol listpids 2>/dev/null | awk 'NR>1 && $1 ~ /^[0-9]+$/ {print $1}' | tr '\n' ' ')
      [ -n "${LEFT// /}" ] && { say "killing leftover job processes: $LEFT"; kill -KILL $LEFT 2>/dev/null || true; }
    fi
  fi
  # 2. daemons, reverse start order; each only if its recorded PID still runs that program
  stop_pid "$PIDS/slurmd.pid" slurmd
  stop_pid "$PIDS/slurmctld.pid" slurmctld
  stop_pid "$PIDS/slurmdbd.pid" slurmdbd
  stop_pid "$DB/mariadbd.pid" mariadbd
  stop_pid "$PIDS/munged.pid" munged     # only recorded if `up` started munged itself
  say "down"
}

cmd_purge() {
  cmd_down
  say "purging $BASE and the /etc/slurm files this script wrote"
  rm -rf "$BASE"
  local f
  for f in "${CONF_FILES[@]}"; do
    [ -f "$f" ] && [ "$(head -n1 "$f")" = "$MARK" ] && rm -f "$f"
  done
  say "purged"
}

# ============================================================================================== status
cmd_status() {
  local ok=0 name file st
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    case $name in mariadbd) file=$DB/mariadbd.pid;; *) file=$PIDS/$name.pid;; esac
    if alive "$file" "$name"; then echo "$name: running pid $(cat "$file")"
    else echo "$name: not running (from this script)"; fi
  done
  if ! command -v sinfo >/dev/null 2>&1; then echo "cluster: not installed"; return 1; fi
  if alive "$PIDS/slurmctld.pid" slurmctld && alive "$PIDS/slurmd.pid" slurmd; then
    st=$(node_state)
    case "$st" in idle|mixed|allocated|completing) ;; *) ok=1;; esac
    echo "node $NODE: ${st:-unknown}"
    sinfo 2>/dev/null
    squeue 2>/dev/null | head -n 20
    [ "$ACCOUNTING" = dbd ] && sacctmgr -n -P show assoc where user=root format=account 2>/dev/null \
      | sort -u | tr '\n' ' ' | sed 's/^/accounts of root: /;s/$/\n/'
  else
    echo "cluster: down"; ok=1
  fi
  return $ok
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  purge) cmd_purge ;;
  status) cmd_status ;;
  *) echo "usage: bash scripts/dev-slurm.sh up|down|purge|status" >&2; exit 2 ;;
esac
