#!/usr/bin/env bash
# Table 1 of the paper: every SSL method on every setting, CLIP ViT-B/16 + VPT-deep.
#   bash scripts/table1.sh                         # 9 settings x 7 methods x seeds 1 2 3
#   SETTINGS="cifar100_N4" METHODS="fixmatch finessl" SEEDS="1" bash scripts/table1.sh prec amp
#   python scripts/summarize.py out/table1         # the table, with the paper's FineSSL row
# Env: SETTINGS, METHODS, SEEDS, OUT (default out/table1), PYTHON. Extra arguments are
# passed on as KEY VALUE overrides. Runs go to $OUT/<setting>/<method>/seed<seed>.
# Resumable: a finished run (results.json) is skipped, an interrupted one is resumed from
# its last checkpoint; a failed run is reported and the sweep goes on (exit status 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_run_one.sh
SETTINGS=${SETTINGS:-"cifar10_N1 cifar10_N2 cifar10_N4 cifar100_N4 cifar100_N25 cifar100_N100 food101_N2 food101_N4 food101_N10"}
METHODS=${METHODS:-"pseudolabel fixmatch flexmatch freematch softmatch debiaspl finessl"}
SEEDS=${SEEDS:-"1 2 3"}
OUT=${OUT:-out/table1}

check_configs $SETTINGS
for setting in $SETTINGS; do
  for method in $METHODS; do
    for seed in $SEEDS; do
      dir="$OUT/$setting/$method/seed$seed"
      run_one "$dir" --cfg "configs/peft/$setting.yaml" vpt_deep True algorithm "$method" \
        seed "$seed" output_dir "$dir" "$@"
    done
  done
done
finish_sweep
