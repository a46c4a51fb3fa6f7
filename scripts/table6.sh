#!/usr/bin/env bash
# Table 6 of the paper: ablations of FineSSL's parts on one setting (VPT-deep).
#   bash scripts/table6.sh                         # cifar100_N4, every variant, seeds 1 2 3
#   VARIANTS="fixmatch finessl" SEEDS="1" bash scripts/table6.sh prec amp
#   python scripts/summarize.py out/table6
# Env: SETTINGS (default cifar100_N4; paper setting names, run with vpt_deep True) or
# CONFIGS (config files, run as they are), VARIANTS, SEEDS, OUT (default out/table6), PYTHON.
# Extra arguments are passed on as KEY VALUE overrides (after the variant's own).
# Runs go to $OUT/<config name>/<variant>/seed<seed>; resumable like table1.sh.
set -euo pipefail
[ -n "${CONFIGS:-}" ] || SETTINGS=${SETTINGS:-cifar100_N4}
source "$(dirname "$0")/_run_one.sh"

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
VARIANTS=${VARIANTS:-$ALL_VARIANTS}
SEEDS=${SEEDS:-"1 2 3"}
OUT=${OUT:-out/table6}

for variant in $VARIANTS; do
  if [ -z "${VARIANT[$variant]+set}" ]; then
    echo "unknown variant '$variant'; known: $ALL_VARIANTS" >&2
    exit 2
  fi
done
resolve_configs
for i in "${!SWEEP_NAMES[@]}"; do
  read -r -a peft <<< "${SWEEP_PEFT[$i]}"
  for variant in $VARIANTS; do
    read -r -a overrides <<< "${VARIANT[$variant]}"
    for seed in $SEEDS; do
      dir="$OUT/${SWEEP_NAMES[$i]}/$variant/seed$seed"
      run_one "$dir" --cfg "${SWEEP_FILES[$i]}" "${peft[@]}" "${overrides[@]}" \
        seed "$seed" output_dir "$dir" "$@"
    done
  done
done
finish_sweep
