#!/usr/bin/env bash
# Start a real single-node Slurm on this machine for the cluster tests (tests/test_cluster_slurm.py).
#
# Idempotent: exits 0 at once when the local Slurm already answers. Needs root and apt-get (Debian's
# slurm-wlm + munge); otherwise it prints why and exits 0, and the Slurm tests skip.
# Everything talks over 127.0.0.1. Config: /etc/slurm/slurm.conf (written only if absent or ours).
#   MFHPO_SLURM_CPUS   CPUs the node advertises (default max(nproc, 4); jobs are sleep-heavy tests)
set -uo pipefail

say() { echo "start_slurm: $*"; }
NODE="$(hostname -s)"
CONF=/etc/slurm/slurm.conf
MARK="# written by mfhpo scripts/start_slurm.sh"

node_ready() {
  # the controller answers and our node is usable (idle/mixed/allocated)
  timeout 10 scontrol ping 2>/dev/null | grep -q "is UP" || return 1
  local st
  st="$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1)"
  case "$st" in idle*|mix*|alloc*|completing*) return 0 ;; *) return 1 ;; esac
}

if command -v scontrol >/dev/null 2>&1 && node_ready; then
  say "Slurm already running (node $NODE $(sinfo -h -n "$NODE" -o %T))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  say "skipped: not root (needs root to install and start slurmctld/slurmd)"
  exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "skipped: slurm is not installed and apt-get is not available"
    exit 0
  fi
  say "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps the package scripts from trying to start services (no systemd here)
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge) >/tmp/mfhpo-slurm-apt.log 2>&1
  rc=$?
  [ "$created_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ $rc -ne 0 ]; then
    say "skipped: apt-get install slurm-wlm munge failed (see /tmp/mfhpo-slurm-apt.log)"
    tail -n 5 /tmp/mfhpo-slurm-apt.log
    exit 0
  fi
fi

# ---- munge -------------------------------------------------------------------------------------
id munge >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin munge
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null 2>&1 \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged 2>/dev/null || su -s /bin/sh munge -c /usr/sbin/munged \
    || /usr/sbin/munged --force
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "failed: munged does not answer"
  exit 1
fi

# ---- slurm.conf --------------------------------------------------------------------------------
NPROC="$(nproc)"
CPUS="${MFHPO_SLURM_CPUS:-$(( NPROC > 4 ? NPROC : 4 ))}"
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
if [ ! -f "$CONF" ] || grep -q "$MARK" "$CONF"; then
  cat > "$CONF" <<EOF
$MARK
ClusterName=mfhpo
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=5
MinJobAge=60
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
else
  say "keeping the existing $CONF (not written by mfhpo)"
fi

# ---- daemons -----------------------------------------------------------------------------------
if ! timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"; then
  pid="$(cat /run/slurm/slurmctld.pid 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; sleep 1; fi
  /usr/sbin/slurmctld || { say "failed: slurmctld did not start (see /var/log/slurm/slurmctld.log)"; tail -n 20 /var/log/slurm/slurmctld.log; exit 1; }
fi
pid="$(cat /run/slurm/slurmd.pid 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  /usr/sbin/slurmd || { say "failed: slurmd did not start (see /var/log/slurm/slurmd.log)"; tail -n 20 /var/log/slurm/slurmd.log; exit 1; }
fi

for i in $(seq 1 60); do
  if node_ready; then break; fi
  st="$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1)"
  case "$st" in down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 ;; esac
  sleep 1
done
if ! node_ready; then
  say "failed: node $NODE is not idle: $(sinfo -h -o '%N %T %E' 2>&1)"
  tail -n 10 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log 2>/dev/null
  exit 1
fi

# ---- smoke test: one real batch job ------------------------------------------------------------
out="$(mktemp /tmp/mfhpo-slurm-smoke.XXXXXX)"
jid="$(sbatch --parsable -o "$out" --cpus-per-task=1 --wrap hostname 2>&1)" || { say "failed: sbatch: $jid"; exit 1; }
for _ in $(seq 1 60); do
  [ -z "$(squeue -h -j "$jid" 2>/dev/null)" ] && [ -s "$out" ] && break
  sleep 0.5
done
if [ ! -s "$out" ]; then
  say "failed: smoke job $jid produced no output: $(squeue -h -j "$jid" -o '%T %R' 2>&1)"
  exit 1
fi
say "Slurm up: node $NODE, $CPUS CPUs, partition debug; smoke job $jid ran on $(cat "$out")"
rm -f "$out"
exit 0
