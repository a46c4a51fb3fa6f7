#!/usr/bin/env bash
# Sweep FineSSL + VPT-deep over the paper's settings and seeds (Table 1, FineSSL row).
#   bash scripts/run_peft.sh                      # all 9 settings x seeds 1 2 3
#   SETTINGS="cifar100_N4" SEEDS="1" bash scripts/run_peft.sh prec amp
# Extra arguments are passed on as KEY VALUE overrides. Resumable: a finished run
# (results.json) is skipped, an interrupted one is resumed from its last checkpoint; a
# failed run is reported and the sweep goes on (exit status 1 at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_run_one.sh
SETTINGS=${SETTINGS:-"cifar10_N1 cifar10_N2 cifar10_N4 cifar100_N4 cifar100_N25 cifar100_N100 food101_N2 food101_N4 food101_N10"}
SEEDS=${SEEDS:-"1 2 3"}
OUT=${OUT:-out/peft}

check_configs $SETTINGS
for setting in $SETTINGS; do
  for seed in $SEEDS; do
    dir="$OUT/$setting/vpt_deep/seed$seed"
    run_one "$dir" --cfg "configs/peft/$setting.yaml" vpt_deep True seed "$seed" \
      output_dir "$dir" "$@"
  done
done
finish_sweep
