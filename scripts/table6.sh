#!/usr/bin/env bash
# Table 6 of the paper: ablations of FineSSL's parts on one setting (VPT-deep).
#   bash scripts/table6.sh                         # cifar100_N4, every variant, seeds 1 2 3
#   VARIANTS="fixmatch finessl" SEEDS="1" bash scripts/table6.sh prec amp
#   python scripts/summarize.py out/table6
# Env: SETTINGS (default cifar100_N4), VARIANTS, SEEDS, OUT (default out/table6), PYTHON.
# Extra arguments are passed on as KEY VALUE overrides (after the variant's own).
# Runs go to $OUT/<setting>/<variant>/seed<seed>; resumable like table1.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_run_one.sh

# variant name -> the KEY VALUE overrides that define it
declare -A VARIANT=(
  [fixmatch]="algorithm fixmatch"
  [fixmatch+bms]="algorithm fixmatch bms True"
  [fixmatch+dls]="algorithm fixmatch dls True"
  [finessl]="algorithm finessl"
  [fixed_alpha]="algorithm finessl bms_fixed_alpha True"
  [no_margin_labeled]="algorithm finessl bms_labeled False"
  [no_smoothing]="algorithm finessl smoothing 0.0"
  [aux_not_detached]="algorithm finessl aux_detach False"
)
ALL_VARIANTS="fixmatch fixmatch+bms fixmatch+dls finessl fixed_alpha no_margin_labeled no_smoothing aux_not_detached"
SETTINGS=${SETTINGS:-"cifar100_N4"}
VARIANTS=${VARIANTS:-$ALL_VARIANTS}
SEEDS=${SEEDS:-"1 2 3"}
OUT=${OUT:-out/table6}

for variant in $VARIANTS; do
  if [ -z "${VARIANT[$variant]+set}" ]; then
    echo "unknown variant '$variant'; known: $ALL_VARIANTS" >&2
    exit 2
  fi
done
check_configs $SETTINGS
for setting in $SETTINGS; do
  for variant in $VARIANTS; do
    read -r -a overrides <<< "${VARIANT[$variant]}"
    for seed in $SEEDS; do
      dir="$OUT/$setting/$variant/seed$seed"
      run_one "$dir" --cfg "configs/peft/$setting.yaml" vpt_deep True "${overrides[@]}" \
        seed "$seed" output_dir "$dir" "$@"
    done
  done
done
finish_sweep
