#!/usr/bin/env bash
# Start a single-node Slurm "cluster" on this machine (Debian/Ubuntu, no systemd needed).
#
#   sudo tests/slurm/setup_local_slurm.sh [PREFIX]        # default PREFIX=/tmp/localslurm (.ci/run uses a temp dir)
#   source PREFIX/env.sh                        # exports SLURM_CONF for clients (sinfo, sbatch, submitit)
#   sudo tests/slurm/teardown_local_slurm.sh [PREFIX]     # stops the daemons by PID
#
# Everything (config, state, spool, logs, pid files, munge key+socket) lives under PREFIX;
# nothing is written to /etc except what apt-get installs. Env knobs:
#   SKIP_APT=1          do not apt-get (packages already present)
#   SLURM_ACCOUNTING=1  also install mariadb + slurmdbd so that `sacct` works (measured +~5 s here;
#                       recommended for submitit: without sacct a job killed before writing its
#                       result makes job.result() wait forever)
#   CLUSTER=localci  CTLD_PORT=6817  SLURMD_PORT=6818  DBD_PORT=6819  DB_PORT=3307
set -euo pipefail

PREFIX=${1:-${SLURM_PREFIX:-/tmp/localslurm}}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATE=${SLURM_CONF_TEMPLATE:-$HERE/slurm.conf.template}
CLUSTER=${CLUSTER:-localci}
CTLD_PORT=${CTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
DBD_PORT=${DBD_PORT:-6819}
DB_PORT=${DB_PORT:-3307}        # private mariadb (accounting only); not the system 3306
SLURM_ACCOUNTING=${SLURM_ACCOUNTING:-0}
T0=$(date +%s%N)
ts() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[%4d.%03ds] %s\n' $((ms/1000)) $((ms%1000)) "$*"; }

# wait_for TIMEOUT_S PIDFILE_OR_- DESCRIPTION CMD...: poll CMD until success; fail fast if the daemon died
wait_for() {
  local timeout=$1 pf=$2 what=$3; shift 3
  local end=$(( $(date +%s) + timeout ))
  while ! timeout 5 "$@" >/dev/null 2>&1; do
    if [ "$pf" != - ] && [ -s "$pf" ] && ! kill -0 "$(cat "$pf")" 2>/dev/null; then
      echo "ERROR: $what died; see $PREFIX/log" >&2; tail -n 5 "$PREFIX"/log/*.log >&2 || true; exit 1
    fi
    if [ "$(date +%s)" -ge "$end" ]; then
      echo "ERROR: timeout waiting for $what" >&2; tail -n 5 "$PREFIX"/log/*.log >&2 || true; exit 1
    fi
    sleep 0.25
  done
}

[ "$(id -u)" = 0 ] || { echo "must run as root (sudo)" >&2; exit 1; }

# ---------------------------------------------------------------- 1. packages
PKGS="slurmctld slurmd slurm-client munge"
[ "$SLURM_ACCOUNTING" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
need=0
for b in slurmctld slurmd sinfo munged; do command -v "$b" >/dev/null || need=1; done
[ "$SLURM_ACCOUNTING" = 1 ] && { command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null || need=1; }
if [ "$need" = 1 ] && [ "${SKIP_APT:-0}" != 1 ]; then
  ts "apt-get install $PKGS"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d / missing systemd just means postinst won't start services: fine, we start them ourselves
  apt-get install -y -q --no-install-recommends $PKGS >/dev/null
fi
ts "packages ok: $(slurmd -V)"

# ---------------------------------------------------------------- 2. directories
if [ -e "$PREFIX/run/slurmctld.pid" ] && kill -0 "$(cat "$PREFIX/run/slurmctld.pid")" 2>/dev/null; then
  echo "slurmctld already running from $PREFIX (run teardown first)" >&2; exit 1
fi
mkdir -p "$PREFIX"/{etc,state,spool/slurmd,log,run,munge,db}
chmod 0755 "$PREFIX" "$PREFIX"/{etc,state,log,run}
chown munge:munge "$PREFIX/munge"; chmod 0755 "$PREFIX/munge"     # socket dir: traversable, not writable by others
KEY="$PREFIX/munge/munge.key"
if [ ! -s "$KEY" ]; then
  dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
  chown munge:munge "$KEY"; chmod 0400 "$KEY"
fi

# ---------------------------------------------------------------- 3. slurm.conf
NODE_HW=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')      # CPUs=.. Boards=.. ... RealMemory=..
if [ "$SLURM_ACCOUNTING" = 1 ]; then
  ACCT_STORAGE=accounting_storage/slurmdbd
  # AccountingStoragePass = munge socket for the slurmctld/sacct -> slurmdbd connection
  # (AuthInfo=socket=... is NOT used for that connection; without this they look in /run/munge)
  ACCT_EXTRA="AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$PREFIX/munge/munge.socket.2"
else
  ACCT_STORAGE=accounting_storage/none
  ACCT_EXTRA="# (no accounting: sacct will report 'Slurm accounting storage is disabled')"
fi
CONF="$PREFIX/etc/slurm.conf"
tpl=$(cat "$TEMPLATE")
tpl=${tpl//@PREFIX@/$PREFIX}; tpl=${tpl//@CLUSTER@/$CLUSTER}
tpl=${tpl//@CTLD_PORT@/$CTLD_PORT}; tpl=${tpl//@SLURMD_PORT@/$SLURMD_PORT}
tpl=${tpl//@NODE_HW@/$NODE_HW}; tpl=${tpl//@ACCT_STORAGE@/$ACCT_STORAGE}; tpl=${tpl//@ACCT_EXTRA@/$ACCT_EXTRA}
printf '%s\n' "$tpl" > "$CONF"
export SLURM_CONF="$CONF"
cat > "$PREFIX/env.sh" <<ENV
export SLURM_CONF=$CONF
ENV
ts "wrote $CONF ($NODE_HW)"

# ---------------------------------------------------------------- 4. munged
runuser -u munge -- /usr/sbin/munged \
  --socket="$PREFIX/munge/munge.socket.2" --key-file="$KEY" \
  --pid-file="$PREFIX/munge/munged.pid" --log-file="$PREFIX/munge/munged.log" \
  --seed-file="$PREFIX/munge/munged.seed"
munge -n -S "$PREFIX/munge/munge.socket.2" | unmunge -S "$PREFIX/munge/munge.socket.2" >/dev/null
ts "munged pid $(cat "$PREFIX/munge/munged.pid")"

# ---------------------------------------------------------------- 4b. optional: mariadb + slurmdbd (makes sacct work)
if [ "$SLURM_ACCOUNTING" = 1 ]; then
  chown mysql:mysql "$PREFIX/db"
  if [ ! -d "$PREFIX/db/data/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$PREFIX/db/data" --skip-test-db \
      >"$PREFIX/log/mariadb-install.log" 2>&1
  fi
  # start as root, drops to mysql; own setsid so it is not in the caller's process group
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$PREFIX/db/data" \
    --socket="$PREFIX/db/mysql.sock" --pid-file="$PREFIX/db/mariadb.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --log-error="$PREFIX/log/mariadb.err" </dev/null >/dev/null 2>&1 &
  wait_for 60 "$PREFIX/db/mariadb.pid" mariadbd test -S "$PREFIX/db/mysql.sock"
  mariadb --no-defaults -S "$PREFIX/db/mysql.sock" -u root -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmci';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  ts "mariadbd pid $(cat "$PREFIX/db/mariadb.pid") (127.0.0.1:$DB_PORT)"
  cat > "$PREFIX/etc/slurmdbd.conf" <<DBD
AuthType=auth/munge
AuthInfo=socket=$PREFIX/munge/munge.socket.2
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$PREFIX/log/slurmdbd.log
PidFile=$PREFIX/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmci
DBD
  chmod 0600 "$PREFIX/etc/slurmdbd.conf"      # slurmdbd refuses a world-readable conf
  SLURM_CONF="$CONF" slurmdbd                  # reads slurmdbd.conf from dirname($SLURM_CONF)
  wait_for 60 "$PREFIX/run/slurmdbd.pid" slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  ts "slurmdbd pid $(cat "$PREFIX/run/slurmdbd.pid")"
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
slurmctld -f "$CONF"
wait_for 60 "$PREFIX/run/slurmctld.pid" slurmctld sh -c 'scontrol ping | grep -q UP'
ts "slurmctld pid $(cat "$PREFIX/run/slurmctld.pid")"
slurmd -f "$CONF" -N localhost
wait_for 60 "$PREFIX/run/slurmd.pid" "slurmd (node idle)" sh -c "sinfo -h -n localhost -o %t | grep -qE '^idle'"
ts "slurmd pid $(cat "$PREFIX/run/slurmd.pid")"
sinfo
ts "ready. Run: source $PREFIX/env.sh"
