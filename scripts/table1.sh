#!/usr/bin/env bash
# Table 1 of the paper: every SSL method on every setting, CLIP ViT-B/16 + VPT-deep.
#   bash scripts/table1.sh                         # 9 settings x 7 methods x seeds 1 2 3
#   SETTINGS="cifar100_N4" METHODS="fixmatch finessl" SEEDS="1" bash scripts/table1.sh prec amp
#   CONFIGS="configs/demo/vit_tiny.yaml" METHODS="fixmatch finessl" bash scripts/table1.sh
#   python scripts/summarize.py out/table1         # the table, with the paper's FineSSL row
# Env: SETTINGS (paper setting names: configs/peft/NAME.yaml + vpt_deep True), CONFIGS
# (config files, run as they are), METHODS, SEEDS, OUT (default out/table1), PYTHON.
# Extra arguments are passed on as KEY VALUE overrides. Runs go to
# $OUT/<config name>/<method>/seed<seed>.
# Resumable: a finished run (results.json) is skipped, an interrupted one is resumed from
# its last checkpoint; a failed run is reported and the sweep goes on (exit status 1).
set -euo pipefail
source "$(dirname "$0")/_run_one.sh"
METHODS=${METHODS:-"pseudolabel fixmatch flexmatch freematch softmatch debiaspl finessl"}
SEEDS=${SEEDS:-"1 2 3"}
OUT=${OUT:-out/table1}

resolve_configs
for i in "${!SWEEP_NAMES[@]}"; do
  read -r -a peft <<< "${SWEEP_PEFT[$i]}"
  for method in $METHODS; do
    for seed in $SEEDS; do
      dir="$OUT/${SWEEP_NAMES[$i]}/$method/seed$seed"
      run_one "$dir" --cfg "${SWEEP_FILES[$i]}" "${peft[@]}" algorithm "$method" \
        seed "$seed" output_dir "$dir" "$@"
    done
  done
done
finish_sweep
