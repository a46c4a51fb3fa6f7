#!/usr/bin/env bash
# Sweep FineSSL over settings and seeds: the paper's Table 1 FineSSL row (VPT-deep), or
# any configs of yours.
#   bash scripts/run_peft.sh                      # the 9 paper settings x seeds 1 2 3
#   SETTINGS="cifar100_N4" SEEDS="1" bash scripts/run_peft.sh prec amp
#   CONFIGS="configs/demo/vit_tiny.yaml" SEEDS="1 2" JOBS=2 bash scripts/run_peft.sh
#   python scripts/summarize.py out/peft
# Env: SETTINGS (paper setting names: configs/peft/NAME.yaml + vpt_deep True), CONFIGS
# (config files, run as they are), SEEDS, OUT (default out/peft), JOBS (runs at once),
# PYTHON. Extra arguments are passed on as KEY VALUE overrides. Runs go to
# $OUT/<config name>/<method>/seed<seed> (method: vpt_deep for SETTINGS; finessl for
# CONFIGS, with algorithm finessl). Resumable, locked, a failed run reported and the
# sweep going on (exit status 1): scripts/sweep.py, which runs every sweep.
exec "${PYTHON:-python}" "$(dirname "$0")/sweep.py" peft -- "$@"
