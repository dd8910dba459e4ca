#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost for the workflow tests (tests/test_slurm.py; the Snakemake and
# SLURM behaviour they rely on is in docs/slurm.md).
#
# Idempotent: packages are installed only when missing, daemons started only when not running, and the script
# returns as soon as the node is idle. Needs root (apt-get, daemons) and a Debian/Ubuntu system without systemd.
#
# The node advertises fake GPUs (GRES gpu:fake:N backed by plain files) and, with SlurmdParameters=config_overrides,
# more CPUs and memory than the machine has, so that the paper profile's sbatch lines (8 GPUs, many CPUs, large
# memory on one node) can be scheduled here. No job may rely on those resources existing: the SLURM tests run the
# smoke DAG (a few CPU seconds per job) and dry-submissions that only inspect their allocation.
#
# Environment: FAKE_GPUS (default 8), FAKE_CPUS (default 64), FAKE_MEM_MB (default 512000), PARTITION (default debug).
set -euo pipefail

FAKE_GPUS=${FAKE_GPUS:-8}
FAKE_CPUS=${FAKE_CPUS:-64}
FAKE_MEM_MB=${FAKE_MEM_MB:-512000}
PARTITION=${PARTITION:-debug}
NODE=$(hostname -s)
CONF_DIR=/etc/slurm
GPU_DIR=/var/lib/slurm-fake-gpu

log() { echo "setup-slurm: $*" >&2; }

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# --- munge ---------------------------------------------------------------------------------------------------
# SLURM authenticates through munge. Without systemd nothing starts munged: it is started here as the munge user,
# and `munge -n | unmunge` proves it works before slurmctld needs it.
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    if command -v mungekey >/dev/null; then mungekey --create --force; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

# --- slurm.conf, gres.conf -----------------------------------------------------------------------------------
# Why these settings:
# - SlurmUser=root, daemons started below by this script: there is no systemd to start them.
# - ProctrackType=proctrack/linuxproc, TaskPlugin=task/none: no cgroup setup needed (containers, CI machines).
# - JobAcctGatherType=jobacct_gather/none, AccountingStorageType=accounting_storage/none: no accounting database,
#   so `sacct` knows no jobs and the executor plugin's default status query hangs silently; the test profile sets
#   `slurm-status-command: squeue` (docs/slurm.md).
# - SelectType=select/cons_tres (what --gpus=N needs) with CR_Core_Memory (cores and memory are consumable): SLURM's
#   record of a job shows the GPUs, CPUs and memory the paper profile asked for.
# - MinJobAge=600: `scontrol show job` keeps a finished job's record 10 minutes; the tests read it.
# - GresTypes=gpu and Gres=gpu:fake:N on the node with a gres.conf line whose File= points at plain files: GPU
#   requests (--gpus=N) are scheduled on a machine without GPUs. Without File= the node goes INVAL.
# - One node on 127.0.0.1 in one default partition.
mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$GPU_DIR"
for ((i = 0; i < FAKE_GPUS; i++)); do touch "$GPU_DIR/gpu$i"; done
cat > "$CONF_DIR/slurm.conf.new" <<CONF
# Written by .ci/setup-slurm.sh: a single-node test cluster with fake GPUs.
ClusterName=retinanet-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
SchedulerParameters=sched_interval=1
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$FAKE_CPUS RealMemory=$FAKE_MEM_MB Gres=gpu:fake:$FAKE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
cat > "$CONF_DIR/gres.conf.new" <<CONF
NodeName=$NODE Name=gpu Type=fake File=$GPU_DIR/gpu[0-$((FAKE_GPUS - 1))]
CONF
changed=0
for f in slurm.conf gres.conf; do
    if ! cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f"; then mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"; changed=1
        log "wrote $CONF_DIR/$f"
    else rm -f "$CONF_DIR/$f.new"; fi
done

# --- daemons -------------------------------------------------------------------------------------------------
running() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
# A daemon counts as alive by its pid file or, while it is still daemonizing (the pid file comes a moment after
# the command returns), by its process name.
alive() { running "/run/$1.pid" || { command -v pgrep >/dev/null && pgrep -x "$1" >/dev/null; }; }
if [[ $changed == 1 ]]; then
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidfile"; then log "config changed: stopping $(basename "$pidfile" .pid)"; kill "$(cat "$pidfile")"; sleep 1; fi
    done
fi
if ! running /run/slurmctld.pid; then log "starting slurmctld"; slurmctld; fi
if ! running /run/slurmd.pid; then log "starting slurmd"; slurmd; fi

declare -A missing=([slurmctld]=0 [slurmd]=0)
for _ in $(seq 60); do
    for daemon in slurmctld slurmd; do
        if alive "$daemon"; then missing[$daemon]=0; continue; fi
        # Gone for 5 consecutive checks: it exited (one check can fall between the fork and the pid file).
        if (( ++missing[$daemon] >= 5 )); then
            log "$daemon exited; last lines of /var/log/slurm/$daemon.log:"; tail -n 20 "/var/log/slurm/$daemon.log" >&2
            exit 1
        fi
    done
    state=$(node_state)
    case "$state" in
        idle*|mixed*|allocated*) log "node $NODE is $state (partition $PARTITION, $FAKE_GPUS fake GPUs)"; exit 0 ;;
        down*|drain*|inval*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
log "node $NODE did not become idle (state: $(node_state)); see /var/log/slurm/slurmd.log and slurmctld.log"
exit 1
