#!/usr/bin/env bash
# The zoo study's sweeps (docs/zoo.md), one family after another, each in
# runs/zoo-study/<family>. Run again to continue: a family's sweep that
# exists is resumed (`fer sweep --resume`), a finished one returns at once.
# WORKERS=N starts a new sweep with N worker processes sharing the cores.
#   nohup scripts/zoo-study.sh [FAMILY...] > runs/zoo-study/log.txt 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
FER=${FER:-target/release/fer}
families=("$@")
[ ${#families[@]} -gt 0 ] || families=(mlp cnn vit resnet18 classical)
mkdir -p runs/zoo-study
for f in "${families[@]}"; do
  dir=runs/zoo-study/$f
  if [ -f "$dir/trials.jsonl" ]; then
    "$FER" sweep "experiments/zoo/$f.yaml" --sweep-dir "$dir" --resume
  else
    "$FER" sweep "experiments/zoo/$f.yaml" --sweep-dir "$dir" --workers "${WORKERS:-1}"
  fi
done
