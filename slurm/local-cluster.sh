#!/usr/bin/env bash
# A one-node SLURM cluster on this host, for the tests and for trying the SLURM path on a workstation.
#
#   sudo slurm/local-cluster.sh start     # write the config + munge key, start munged, slurmctld, slurmd
#   export SLURM_CONF=/tmp/rewarm-slurm/slurm.conf   # (start prints this) then sbatch / squeue / scancel work
#   slurm/local-cluster.sh status          # the daemons this script started, and `sinfo`
#   sudo slurm/local-cluster.sh stop      # stop the daemons this script started, nothing else
#
# Needs root (slurmd starts jobs as their user) and the Debian/Ubuntu packages `slurm-wlm` and `munge`
# (SLURM 22.05 on Debian 12): `apt-get install slurm-wlm munge`. Everything lives under the state directory
# ($REWARM_SLURM_DIR, default /tmp/rewarm-slurm): slurm.conf, the munge key and socket, the daemons' pid files,
# logs and spool. Nothing under /etc is touched, and the ports (6917/6918, $REWARM_SLURM_PORT and +1) are
# not SLURM's defaults, so a site installation on the same host is left alone.
#
# The node is this host: `slurmd -C` gives its CPUs and memory. One partition `debug`, the default.
# AuthInfo cred_expire (default 120 s in SLURM) is also how long a requeued job waits (reason `BeginTime`)
# before it may start again (BeginTime = requeue + cred_expire + 1 s): it is set to $REWARM_SLURM_REQUEUE_DELAY
# seconds (default 5, SLURM's minimum; smaller values are refused by SLURM and fall back to 120).
# `start` is idempotent (a running cluster is left as it is) and waits until `sinfo` shows the node idle.
set -euo pipefail

STATE="${REWARM_SLURM_DIR:-/tmp/rewarm-slurm}"
PORT="${REWARM_SLURM_PORT:-6917}"
REQUEUE_DELAY="${REWARM_SLURM_REQUEUE_DELAY:-5}"
CONF="$STATE/slurm.conf"
export SLURM_CONF="$CONF"
DAEMONS=(munged slurmctld slurmd)

die() { echo "local-cluster: $*" >&2; exit 1; }

pid_of() {  # the pid this script recorded for daemon $1, if that process still runs that daemon
    local f="$STATE/run/$1.pid" pid
    [ -s "$f" ] || return 1
    pid="$(tr -dc '0-9' < "$f")"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] && echo "$pid"
}

need_tools() {
    local t
    [ "$REQUEUE_DELAY" -ge 5 ] 2>/dev/null || die "REWARM_SLURM_REQUEUE_DELAY=$REQUEUE_DELAY: give 5 seconds or more (SLURM's minimum cred_expire)"
    for t in munged slurmctld slurmd sinfo sbatch scontrol; do
        command -v "$t" >/dev/null || die "$t not found: install SLURM first (apt-get install slurm-wlm munge)"
    done
    [ "$(id -u)" = 0 ] || die "run as root (slurmd starts jobs as their user; munged runs as user munge)"
}

write_munge_key() {
    mkdir -p "$STATE/munge"
    if [ ! -s "$STATE/munge/munge.key" ]; then
        head -c 1024 /dev/urandom > "$STATE/munge/munge.key"
    fi
    chown -R munge:munge "$STATE/munge"
    chmod 755 "$STATE/munge"  # the socket must be reachable by every user; the key stays 0600
    chmod 600 "$STATE/munge/munge.key"
}

node_line() {  # NodeName=<host> CPUs=... RealMemory=... as slurmd detects them, reachable at 127.0.0.1
    slurmd -C | head -n 1 | sed -e 's/$/ NodeAddr=127.0.0.1 State=UNKNOWN/'
}

write_conf() {
    local host
    host="$(hostname -s)"
    mkdir -p "$STATE/run" "$STATE/log" "$STATE/ctld" "$STATE/spool"
    cat > "$CONF" <<EOF
# written by slurm/local-cluster.sh: a one-node cluster on $host for tests and trials
ClusterName=rewarm-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=$REQUEUE_DELAY
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
$(node_line)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    local cpus mem
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' "$CONF")"
    mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' "$CONF")"
    echo "DefMemPerCPU=$((mem / cpus))" >> "$CONF"
}

start_munged() {
    pid_of munged >/dev/null && return 0
    rm -f "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
    runuser -u munge -- munged --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
    cp "$STATE/munge/munged.pid" "$STATE/run/munged.pid"
}

start_daemon() {  # slurmctld / slurmd: they daemonize and write the pid file named in slurm.conf
    pid_of "$1" >/dev/null && return 0
    "$1" -f "$CONF"
}

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n 1; }

wait_idle() {
    local i state=""
    for i in $(seq 1 120); do
        state="$(node_state)"
        case "$state" in
            idle|mix|alloc) return 0 ;;
            down*|drain*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "the node is not idle after 60 s (sinfo: '${state:-no answer}'); logs: $STATE/log/"
}

cmd_start() {
    need_tools
    if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && pid_of munged >/dev/null; then
        wait_idle
        echo "local-cluster: already running (state $STATE)"
    else
        mkdir -p "$STATE"
        [ -f "$CONF" ] && pid_of slurmctld >/dev/null || write_conf
        write_munge_key
        start_munged
        start_daemon slurmctld
        start_daemon slurmd
        wait_idle
        echo "local-cluster: started (state $STATE)"
        getent hosts "$(hostname -s)" >/dev/null || echo "local-cluster: warning: $(hostname -s) does not resolve;" \
            "jobs of several tasks find their master by it: add '127.0.0.1 $(hostname -s)' to /etc/hosts" >&2
    fi
    echo "export SLURM_CONF=$CONF"
}

cmd_stop() {
    local d pid stopped=0
    for d in slurmd slurmctld munged; do
        if pid="$(pid_of "$d")"; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
            [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
            stopped=$((stopped + 1))
        fi
        rm -f "$STATE/run/$d.pid"
    done
    echo "local-cluster: stopped $stopped daemon(s) (state $STATE)"
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid="$(pid_of "$d")"; then echo "$d: running (pid $pid)"; else echo "$d: not running"; rc=3; fi
    done
    [ "$rc" = 0 ] && sinfo
    echo "export SLURM_CONF=$CONF"
    return "$rc"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
