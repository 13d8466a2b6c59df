#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine: munged, slurmctld and slurmd with the minimal
# configuration of slurm.conf.in, and waits until the node is idle. Run as root, after
#   apt-get install slurm-wlm munge        (Debian / Ubuntu)
# Then, in the shell that submits:
#   export SLURM_CONF=/tmp/laplace-lora-slurm/slurm.conf
#   laplace-lora sweep assets/sweeps/... --executor slurm --wait
# scripts/slurm/stop.sh stops it again. Running start.sh twice restarts the cluster (its job
# queue cleared).
#
# Usage: scripts/slurm/start.sh [DIR]   (DIR: state, logs and slurm.conf; default
#        $LAPLACE_LORA_SLURM_DIR or /tmp/laplace-lora-slurm). Environment: SLURM_CTLD_PORT,
#        SLURMD_PORT (default 6817, 6818), SLURM_START_TIMEOUT (seconds to wait for the node, 60).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-${LAPLACE_LORA_SLURM_DIR:-/tmp/laplace-lora-slurm}}
timeout=${SLURM_START_TIMEOUT:-60}

fail() {
  echo "slurm/start.sh: $*" >&2
  for f in "$dir/slurmctld.log" "$dir/slurmd.log" "$dir/munged.log"; do
    [ -f "$f" ] && { echo "--- last lines of $f:" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (slurmd starts jobs as their users, munged reads the key)"
for c in munged munge unmunge slurmctld slurmd sinfo scontrol; do
  command -v "$c" >/dev/null || fail "$c not found: install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)"
done

"$here/stop.sh" "$dir" >/dev/null 2>&1 || true
mkdir -p "$dir/state" "$dir/spool"

# munge: a key (1024 random bytes, owned by munge, mode 400), its folders, the daemon.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  munged --force --log-file="$dir/munged.log" || fail "munged did not start"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null 2>&1 || fail "munge does not answer"
fi

# slurm.conf: this host, this machine's CPUs and memory as slurmd detects them.
host=$(hostname -s)
node_line=$(slurmd -C | head -n 1)
case "$node_line" in NodeName=*) ;; *) fail "unexpected output of slurmd -C: $node_line" ;; esac
node_name=${node_line%% *}
node_name=${node_name#NodeName=}
# 90% of the memory slurmd reports: a node whose configured memory exceeds what slurmd finds at
# registration is drained ("Low RealMemory"), and memory is not a consumable here anyway.
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
[ -n "$mem" ] && node_line=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$node_line")
# Addresses are localhost, so the host name need not resolve.
node_line="$node_line NodeAddr=127.0.0.1"
sed -e "s|@HOST@|$host|" -e "s|@DIR@|$dir|g" -e "s|@NODE_LINE@|$node_line|" -e "s|@NODE_NAME@|$node_name|" \
  -e "s|@CTLD_PORT@|${SLURM_CTLD_PORT:-6817}|" -e "s|@SLURMD_PORT@|${SLURMD_PORT:-6818}|" \
  "$here/slurm.conf.in" >"$dir/slurm.conf"
export SLURM_CONF="$dir/slurm.conf"

slurmctld -c || fail "slurmctld did not start"
slurmd || fail "slurmd did not start"

# Wait until the node takes jobs.
state=""
for _ in $(seq $((timeout * 2))); do
  state=$(sinfo -h -n "$node_name" -o %T 2>/dev/null | head -n 1 || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
if [ "$state" != idle ]; then
  scontrol show node "$node_name" >&2 2>/dev/null || true
  fail "node $node_name is not idle after ${timeout} s (state: ${state:-no answer})"
fi
echo "slurm: node $node_name idle (${node_line#* }); export SLURM_CONF=$dir/slurm.conf"
