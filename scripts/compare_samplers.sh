#!/usr/bin/env bash
# TPE against random on a real small sweep, same budget, several seeds:
# experiments/sampler-compare.yaml run once per (sampler, seed), then the
# trials each needed to reach a validation accuracy, from their journals.
#   scripts/compare_samplers.sh [SEEDS] [TARGET_ACC]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-"0 1 2"}
TARGET=${2:-0.40}
FER=./target/release/fer
OUT=runs/sampler-compare
mkdir -p "$OUT"
for s in $SEEDS; do
  for k in random tpe; do
    d="$OUT/$k-seed$s"
    if [ ! -f "$d/summary.json" ]; then
      rm -rf "$d"
      "$FER" sweep experiments/sampler-compare.yaml --sweep-dir "$d" \
        --set seed="$s" --set search.sampler.kind="$k" > "$d.log" 2>&1 || true
    fi
  done
done
.venv/bin/python - "$OUT" "$TARGET" $SEEDS <<'PY'
import json, sys
out, target, seeds = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
print(f"| sampler | seed | trials to reach val acc >= {target} | best val acc | trials |")
print("|---|---:|---:|---:|---:|")
agg = {}
for k in ["random", "tpe"]:
    for s in seeds:
        trials = json.load(open(f"{out}/{k}-seed{s}/summary.json"))["trials"]
        vals = [t["value"] for t in trials if t["state"] == "complete" and t["value"] is not None]
        reach = next((i + 1 for i, t in enumerate(trials) if t["value"] is not None and t["value"] >= target), None)
        best = max(vals) if vals else float("nan")
        agg.setdefault(k, []).append((reach, best))
        print(f"| {k} | {s} | {reach if reach else f'not in {len(trials)}'} | {best:.4f} | {len(trials)} |")
for k, rows in agg.items():
    hit = [x[0] for x in rows if x[0]]
    print(f"\n{k}: reached in {len(hit)}/{len(rows)} seeds; mean trials when reached {sum(hit)/max(len(hit),1):.1f}; mean best {sum(x[1] for x in rows)/len(rows):.4f}")
PY
