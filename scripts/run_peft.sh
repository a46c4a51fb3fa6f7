#!/usr/bin/env bash
# Sweep FineSSL over settings and seeds: the paper's Table 1 FineSSL row (VPT-deep), or
# any configs of yours.
#   bash scripts/run_peft.sh                      # the 9 paper settings x seeds 1 2 3
#   SETTINGS="cifar100_N4" SEEDS="1" bash scripts/run_peft.sh prec amp
#   CONFIGS="configs/demo/vit_tiny.yaml" SEEDS="1 2" bash scripts/run_peft.sh
#   python scripts/summarize.py out/peft
# Env: SETTINGS (paper setting names: configs/peft/NAME.yaml + vpt_deep True), CONFIGS
# (config files, run as they are), SEEDS, OUT (default out/peft), PYTHON. Extra
# arguments are passed on as KEY VALUE overrides. Runs go to
# $OUT/<config name>/<method>/seed<seed> (method: vpt_deep for SETTINGS; finessl for CONFIGS,
# with algorithm finessl). Resumable: a finished run (results.json) is skipped, an
# interrupted one is resumed from its last checkpoint; a failed run is reported and the
# sweep goes on (exit status 1 at the end).
set -euo pipefail
source "$(dirname "$0")/_run_one.sh"
SEEDS=${SEEDS:-"1 2 3"}
OUT=${OUT:-out/peft}

resolve_configs
for i in "${!SWEEP_NAMES[@]}"; do
  read -r -a peft <<< "${SWEEP_PEFT[$i]:-algorithm finessl}"
  method=vpt_deep
  [ -n "${SWEEP_PEFT[$i]}" ] || method=finessl
  for seed in $SEEDS; do
    dir="$OUT/${SWEEP_NAMES[$i]}/$method/seed$seed"
    run_one "$dir" --cfg "${SWEEP_FILES[$i]}" "${peft[@]}" seed "$seed" output_dir "$dir" "$@"
  done
done
finish_sweep
