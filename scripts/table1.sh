#!/usr/bin/env bash
# Table 1 of the paper: every SSL method on every setting, CLIP ViT-B/16 + VPT-deep.
#   bash scripts/table1.sh                         # 9 settings x 7 methods x seeds 1 2 3
#   SETTINGS="cifar100_N4" METHODS="fixmatch finessl" SEEDS="1" bash scripts/table1.sh prec amp
#   CONFIGS="configs/demo/vit_tiny.yaml" METHODS="fixmatch finessl" bash scripts/table1.sh
#   python scripts/summarize.py out/table1         # the table, with the paper's FineSSL row
# Env: SETTINGS (paper setting names: configs/peft/NAME.yaml + vpt_deep True), CONFIGS
# (config files, run as they are), METHODS, SEEDS, OUT (default out/table1), JOBS (runs
# at once), PYTHON. Extra arguments are passed on as KEY VALUE overrides. Runs go to
# $OUT/<config name>/<method>/seed<seed>. Resumable, locked, a failed run reported and
# the sweep going on (exit status 1): scripts/sweep.py, which runs every sweep.
exec "${PYTHON:-python}" "$(dirname "$0")/sweep.py" table1 -- "$@"
