#!/usr/bin/env bash
# Table 6 of the paper: ablations of FineSSL's parts on one setting (VPT-deep).
#   bash scripts/table6.sh                         # cifar100_N4, every variant, seeds 1 2 3
#   VARIANTS="fixmatch finessl" SEEDS="1" bash scripts/table6.sh prec amp
#   python scripts/summarize.py out/table6
# Env: SETTINGS (default cifar100_N4; paper setting names, run with vpt_deep True) or
# CONFIGS (config files, run as they are), VARIANTS (scripts/sweep.py's TABLE6), SEEDS,
# OUT (default out/table6), JOBS (runs at once), PYTHON. Extra arguments are passed on
# as KEY VALUE overrides (after the variant's own). Runs go to
# $OUT/<config name>/<variant>/seed<seed>; resumable like table1.sh.
exec "${PYTHON:-python}" "$(dirname "$0")/sweep.py" table6 -- "$@"
