#!/usr/bin/env bash
# Trials per hour of one small-model sweep run two ways, side by side in one
# run on this machine: one worker with all threads, and N workers with an
# equal share each (docs/performance.md). Random search, so both ways train
# the same trials (proposals are seeded by trial number).
#   scripts/bench-workers.sh [EXPERIMENT] [TRIALS] [WORKERS] [--set KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
exp=${1:-experiments/sampler-compare.yaml}
trials=${2:-12}
workers=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
FER=${FER:-target/release/fer}
cores=$(nproc)
out=$(mktemp -d)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $cores cores; $exp, $trials random trials $*"
run() {
  local n=$1 dir=$out/w$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  "$FER" --threads "$cores" sweep "$exp" --sweep-dir "$dir" --workers "$n" \
    --set search.n_trials="$trials" --set 'search.sampler={kind: random}' "$@" >/dev/null 2>"$dir.log"
  t1=$(date +%s.%N)
  python3 - "$n" "$t0" "$t1" "$trials" "$cores" <<'PY'
import sys
n, t0, t1, trials, cores = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = t1 - t0
print(f"{n} worker(s) x {max(cores // n, 1)} thread(s): {trials} trials in {s:.0f} s = {trials / s * 3600:.0f} trials/hour")
PY
}
run 1 "$@"
run "$workers" "$@"
rm -rf "$out"
