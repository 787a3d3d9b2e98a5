#!/usr/bin/env bash
# A one-node SLURM (Debian's slurm-wlm) on loopback for the launcher's tests:
#
#     source .ci/slurm.sh start    # installs it if missing, starts slurmctld + slurmd, exports SLURM_CONF
#     bash .ci/slurm.sh stop       # stops both by their PIDs
#
# No munge (auth/none, cred/none); two fake GPUs through gres.conf, so each array task gets its own
# CUDA_VISIBLE_DEVICES; two partitions, `low` and `high` (preempt/partition_prio, PreemptMode=REQUEUE):
# a job in `high` preempts and requeues one in `low`, as a cluster's preemption does.
DATADREAM_SLURM_DIR=${DATADREAM_SLURM_DIR:-/tmp/datadream-slurm}

slurm_start() {
    if ! command -v slurmctld >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm >/dev/null || { echo "slurm-wlm did not install"; return 1; }
    fi
    local d=$DATADREAM_SLURM_DIR host
    host=$(hostname -s)
    rm -rf "$d" && mkdir -p "$d/state" "$d/spool" "$d/log"
    cat > "$d/slurm.conf" <<EOF
ClusterName=datadream-ci
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN
PartitionName=low Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
    echo "Name=gpu File=/dev/tty[1-2]" > "$d/gres.conf"
    export SLURM_CONF=$d/slurm.conf
    slurmctld -f "$SLURM_CONF" || { echo "slurmctld did not start"; return 1; }
    slurmd -f "$SLURM_CONF" || { echo "slurmd did not start"; return 1; }
    for _ in $(seq 1 60); do
        if sinfo -h -o %t 2>/dev/null | grep -q idle; then
            echo "SLURM up: $(sinfo -h -o '%P %t %N' | tr '\n' ' ')"
            return 0
        fi
        sleep 0.5
    done
    echo "SLURM did not become idle"; sinfo || true
    return 1
}

slurm_stop() {
    local d=$DATADREAM_SLURM_DIR
    for daemon in slurmd slurmctld; do
        [ -f "$d/$daemon.pid" ] && kill "$(cat "$d/$daemon.pid")" 2>/dev/null || true
    done
}

case "${1:-}" in
    start) slurm_start ;;
    stop) slurm_stop ;;
esac
