#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (localhost), with accounting, for the Slurm launcher's tests.
#
#   .ci/slurm-cluster.sh up        install Debian's packages (once), configure, start; idempotent
#   .ci/slurm-cluster.sh status    each daemon and the node; exit 0 when `sinfo` and `sacct` answer
#   .ci/slurm-cluster.sh down      cancel the jobs and stop the daemons; `down --purge` also deletes the state
#   .ci/slurm-cluster.sh env       the line to use the cluster from a shell: export SLURM_CONF=...
#
# Runs as root. Everything (configuration, munge key, spool, logs, MariaDB's data) lives under
# $MEDVIT_SLURM_DIR (default /var/tmp/medvit-slurm); nothing under /etc is written, so the Slurm commands
# need SLURM_CONF=$MEDVIT_SLURM_DIR/etc/slurm.conf (`eval "$(.ci/slurm-cluster.sh env)"`).
# No systemd: the daemons (munged, mariadbd, slurmdbd, slurmctld, slurmd) are started directly, each with a
# pid file. The node has this machine's CPUs (nproc) and memory (free), one CPU and 1 GB per job by
# default. Two partitions: `debug` (the default) and `urgent`, whose jobs preempt `debug` jobs
# (preempt/partition_prio, PreemptMode=REQUEUE: the preempted job gets submitit's signal, USR2, then is
# requeued). Ports: slurmctld 6817, slurmd 6818, slurmdbd 6819, MariaDB $MEDVIT_SLURM_DB_PORT (3307),
# all on 127.0.0.1.
set -euo pipefail

STATE=${MEDVIT_SLURM_DIR:-/var/tmp/medvit-slurm}
DB_PORT=${MEDVIT_SLURM_DB_PORT:-3307}
ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
NODE=$(hostname -s)
export SLURM_CONF=$ETC/slurm.conf

say() { echo "slurm-cluster: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

pid_alive() {  # pid_alive FILE: the process in the pid file runs
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what did not come up in ${seconds} s (logs: $LOG)"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null || die "packages ${missing[*]} are missing and there is no apt-get"
  say "installing ${missing[*]} (apt-get; log: $LOG/apt.log)"
  # Debian's postinst scripts would start the services: a policy-rc.d that says no, for the install only.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; ours=1; fi
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >>"$LOG/apt.log" 2>&1 || { [[ $ours == 1 ]] && rm -f "$policy"; die "apt-get failed: tail $LOG/apt.log"; }
  [[ $ours == 1 ]] && rm -f "$policy"
  return 0
}

write_if_changed() {  # write_if_changed FILE MODE < content; prints "changed" when the file changed
  local file=$1 mode=$2 tmp
  tmp=$(mktemp "$file.XXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv "$tmp" "$file"; echo changed; fi
}

configure() {  # prints "changed" when slurm.conf or slurmdbd.conf changed
  local cpus mem_mb db_password
  cpus=$(nproc)
  mem_mb=$(free -m | awk '/^Mem:/ {print $2}')
  mem_mb=$((mem_mb * 95 / 100))  # what slurmd measures is a little under free's total
  if [[ ! -s $ETC/db.password ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$ETC/db.password")
  fi
  db_password=$(cat "$ETC/db.password")
  write_if_changed "$ETC/slurm.conf" 644 <<EOF
# Written by .ci/slurm-cluster.sh: a single-node cluster on $NODE for medvit's launcher tests.
ClusterName=medvit
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$RUN/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStoragePass=$RUN/munge/munge.socket
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SchedulerParameters=sched_interval=5,bf_interval=5
SlurmctldParameters=preempt_send_user_signal
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
  write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
# Written by .ci/slurm-cluster.sh: accounting in MariaDB on 127.0.0.1:$DB_PORT.
AuthType=auth/munge
AuthInfo=socket=$RUN/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_password
StorageLoc=slurm_acct_db
EOF
}

start_munge() {
  if [[ ! -s $STATE/munge/munge.key ]]; then
    mungekey --create --keyfile="$STATE/munge/munge.key" --bits=1024
  fi
  chown -R munge:munge "$STATE/munge"
  chmod 700 "$STATE/munge"
  chmod 400 "$STATE/munge/munge.key"
  mkdir -p "$RUN/munge"
  touch "$LOG/munged.log"
  chown munge:munge "$RUN/munge" "$LOG/munged.log"
  chmod 755 "$RUN/munge"
  pid_alive "$RUN/munge/munged.pid" && return 0
  runuser -u munge -- munged --key-file="$STATE/munge/munge.key" --socket="$RUN/munge/munge.socket" \
    --pid-file="$RUN/munge/munged.pid" --log-file="$LOG/munged.log" --seed-file="$STATE/munge/munged.seed"
  wait_for 20 munged munge --socket="$RUN/munge/munge.socket" -n
}

mariadb_sql() { mariadb --socket="$RUN/mysqld/mysqld.sock" -u root "$@"; }

start_mariadb() {
  mkdir -p "$RUN/mysqld"
  touch "$LOG/mariadb.log"
  chown mysql:mysql "$RUN/mysqld" "$LOG/mariadb.log"
  if [[ ! -d $STATE/mysql/mysql ]]; then
    mkdir -p "$STATE/mysql"
    chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --skip-test-db \
      --auth-root-authentication-method=socket >>"$LOG/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed: tail $LOG/mariadb-install.log"
  fi
  if ! pid_alive "$RUN/mysqld/mysqld.pid"; then
    setsid -f mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$RUN/mysqld/mysqld.sock" \
      --pid-file="$RUN/mysqld/mysqld.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
      --log-error="$LOG/mariadb.log" --innodb-buffer-pool-size=64M --max-connections=50 \
      --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1
    wait_for 60 MariaDB mariadb-admin --socket="$RUN/mysqld/mysqld.sock" ping
  fi
  local password
  password=$(cat "$ETC/db.password")
  mariadb_sql <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

start_slurm() {  # start_slurm RESTART(0|1)
  local restart=$1
  if [[ $restart == 1 ]]; then stop_daemon slurmd; stop_daemon slurmctld; stop_daemon slurmdbd; fi
  pid_alive "$RUN/slurmdbd.pid" || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=cluster | grep -qx medvit || sacctmgr -i add cluster medvit >/dev/null
  pid_alive "$RUN/slurmctld.pid" || slurmctld
  wait_for 60 slurmctld scontrol ping
  pid_alive "$RUN/slurmd.pid" || slurmd -N "$NODE"
  wait_for 60 "the node $NODE (idle in sinfo)" node_ready
  # a node left down or drained by an earlier run (e.g. a kill) serves again
  scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  wait_for 30 sacct sacct -n -X -S now
}

node_ready() { sinfo -h -n "$NODE" -o %t | grep -Eq '^(idle|mix|alloc)'; }

stop_daemon() {  # stop_daemon NAME: SIGTERM, then SIGKILL after 20 s
  local file
  case $1 in
    munged) file=$RUN/munge/munged.pid ;;
    mariadbd) file=$RUN/mysqld/mysqld.pid ;;
    *) file=$RUN/$1.pid ;;
  esac
  pid_alive "$file" || { rm -f "$file"; return 0; }
  local pid
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { say "$1 ($pid) ignored SIGTERM: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; }
  rm -f "$file"
}

up() {
  [[ $(id -u) == 0 ]] || die "needs root (it installs packages and starts daemons); run as root"
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/munge" "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
  install_packages
  local changed
  changed=$(configure)
  start_munge
  start_mariadb
  start_slurm "$([[ -n $changed ]] && pid_alive "$RUN/slurmctld.pid" && echo 1 || echo 0)"
  say "up: $(sinfo -h -o '%P %D %c CPUs %m MB %t' | tr '\n' ';' | sed 's/;$//')"
  say "use it with: export SLURM_CONF=$SLURM_CONF"
}

down() {
  if [[ -f $ETC/slurm.conf ]] && pid_alive "$RUN/slurmctld.pid"; then
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086
      scancel $jobs || true
      for ((i = 0; i < 60; i++)); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.5; done
    fi
  fi
  for d in slurmd slurmctld slurmdbd mariadbd munged; do stop_daemon "$d"; done
  if [[ ${1:-} == --purge ]]; then rm -rf "$STATE"; say "down; removed $STATE"; else say "down (state kept in $STATE)"; fi
}

status() {
  local rc=0
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    local file=$RUN/$d.pid
    [[ $d == munged ]] && file=$RUN/munge/munged.pid
    [[ $d == mariadbd ]] && file=$RUN/mysqld/mysqld.pid
    if pid_alive "$file"; then echo "$d: running (pid $(cat "$file"))"; else echo "$d: stopped"; rc=1; fi
  done
  if [[ $rc == 0 ]]; then
    sinfo -o '%P %a %D %c %m %t' || rc=1
    sacct -n -X -S now >/dev/null || { echo "sacct: no answer"; rc=1; }
  fi
  return $rc
}

case ${1:-} in
  up) up ;;
  down) down "${2:-}" ;;
  status) status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 up | down [--purge] | status | env" >&2; exit 2 ;;
esac
