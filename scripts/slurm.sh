#!/usr/bin/env bash
# A private one-node Slurm cluster for the tests: `up` starts munged (if not
# running), slurmctld and slurmd with a configuration in $SLURM_DIR (default
# /tmp/pipeline-slurm) and prints `export SLURM_CONF=...`; `down` stops, by pid,
# exactly what `up` started. Nothing under /etc/slurm is touched. A job in the
# `urgent` partition preempts (cancels, state PREEMPTED) jobs of the default
# `debug` partition that hold the CPUs it needs, as on a shared cluster.
#
# A job over its --mem is stopped as most sites do it, by a cgroup memory limit
# (task/cgroup, ConstrainRAMSpace: the kernel kills it, Slurm says OUT_OF_MEMORY),
# where this machine lets root make cgroup v1 memory groups; elsewhere, or with
# SLURM_MEMORY=poll, as sites without cgroups do it (OverMemoryKill, polled each
# second: the job ends FAILED and its log says why). SLURM_MEMORY=cgroup insists.
set -euo pipefail
DIR="${SLURM_DIR:-/tmp/pipeline-slurm}"
CONF="$DIR/slurm.conf"
CGROUP_ROOT=/sys/fs/cgroup

# Whether Slurm's cgroup v1 plugin can work here: a memory hierarchy that root
# can make groups in, and the freezer that proctrack/cgroup uses.
cgroup_v1_usable() {
  local probe="$CGROUP_ROOT/memory/pipeline-slurm-probe.$$"
  [ -d "$CGROUP_ROOT/memory" ] && [ -d "$CGROUP_ROOT/freezer" ] || return 1
  mkdir "$probe" 2>/dev/null || return 1
  rmdir "$probe"
}

memory_mode() {
  case "${SLURM_MEMORY:-auto}" in
    cgroup) echo cgroup ;;
    poll) echo poll ;;
    auto) if cgroup_v1_usable; then echo cgroup; else echo poll; fi ;;
    *) echo "slurm.sh: SLURM_MEMORY must be auto, cgroup or poll" >&2; return 1 ;;
  esac
}

up() {
  # A private test cluster starts empty: no daemons, no jobs left from an earlier one.
  down
  rm -rf "$DIR/state" "$DIR/spool"
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  local cpus mem mode proctrack task gather
  mode=$(memory_mode)
  if [ "$mode" = cgroup ]; then
    proctrack=proctrack/cgroup task=task/cgroup gather=
    cat > "$DIR/cgroup.conf" <<CG
CgroupPlugin=cgroup/v1
CgroupMountpoint=$CGROUP_ROOT
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
CG
  else
    proctrack=proctrack/linuxproc task=task/none gather=JobAcctGatherParams=OverMemoryKill
    rm -f "$DIR/cgroup.conf"
  fi
  echo "slurm.sh: --mem enforced by $mode" >&2
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$CONF" <<CONF
ClusterName=pipelinetest
SlurmctldHost=localhost
SlurmctldPort=${SLURMCTLD_PORT:-6917}
SlurmdPort=${SLURMD_PORT:-6918}
ProctrackType=$proctrack
TaskPlugin=$task
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
$gather
JobCompType=jobcomp/none
MinJobAge=300
SchedulerParameters=sched_interval=1
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmUser=root
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10
CONF
  export SLURM_CONF="$CONF"
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    runuser -u munge -- /usr/sbin/munged
    pgrep -x munged > "$DIR/munged.pid"
  fi
  /usr/sbin/slurmctld -f "$CONF"
  /usr/sbin/slurmd -f "$CONF"
  for _ in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.5
  done
  echo "slurm.sh: the one-node cluster did not come up; see $DIR/log" >&2
  sinfo >&2 || true
  return 1
}

down() {
  for d in slurmd slurmctld munged; do
    [ -f "$DIR/$d.pid" ] || continue
    pid="$(cat "$DIR/$d.pid")"
    kill "$pid" 2>/dev/null || true
    # slurmctld saves its state on the way out: wait for it, then insist.
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/$d.pid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
