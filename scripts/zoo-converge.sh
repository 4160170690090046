#!/usr/bin/env bash
# The zoo study's convergence runs (docs/zoo.md): each family's best recipe,
# configs/<family>.yaml, trained into runs/zoo/<family>. Run again to
# continue: an unfinished run is resumed from its last checkpoint
# (`fer train --resume`), a finished one is left alone. Families run one
# after another in this process; start several processes (one per core,
# FER_THREADS=1) to train families side by side.
#   FER_THREADS=1 nohup scripts/zoo-converge.sh cnn > runs/zoo/cnn.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
FER=${FER:-target/release/fer}
families=("$@")
[ ${#families[@]} -gt 0 ] || families=(classical mlp cnn resnet18 vit)
mkdir -p runs/zoo
for f in "${families[@]}"; do
  dir=runs/zoo/$f
  if [ -f "$dir/eval.json" ]; then
    echo "zoo-converge: $dir is finished"
  elif [ -f "$dir/config.yaml" ]; then
    "$FER" train --resume "$dir"
  else
    "$FER" train "configs/$f.yaml" --run-dir "$dir"
  fi
done
