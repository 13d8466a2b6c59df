#!/usr/bin/env bash
# Stops the one-node Slurm cluster that start.sh started (slurmd, slurmctld; munged keeps running,
# other programs may use it). Usage: scripts/slurm/stop.sh [DIR]
set -uo pipefail
dir=${1:-${LAPLACE_LORA_SLURM_DIR:-/tmp/laplace-lora-slurm}}
for d in slurmd slurmctld; do
  f="$dir/$d.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  # Only a process that is that daemon (a stale pid file may name another program by now).
  if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$d" ]; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stopped $d ($pid)"
  fi
  rm -f "$f"
done
