#!/usr/bin/env bash
# The long-tailed table: CIFAR-10-LT (ratio 100, 150) and CIFAR-100-LT (ratio 10, 15) at
# USB's sizes, unlabeled sets consistent or reversed (configs/lt/), CLIP ViT-B/16 +
# VPT-deep, every row of scripts/sweep.py's imb_rows() x seeds 1 2 3.
#   bash scripts/imb.sh
#   SETTINGS="cifar10_lt_r100 cifar10_lt_r100_rev" METHODS="fixmatch finessl" bash scripts/imb.sh
#   python scripts/summarize.py out/imb                      # top-1, with USB's figures
#   python scripts/summarize.py out/imb --metric tail        # accuracy over the tail classes
# Env: SETTINGS (configs/lt/NAME.yaml + vpt_deep True), CONFIGS, METHODS (imb_rows()'s names),
# SEEDS, OUT (default out/imb), JOBS, PYTHON. Extra arguments are KEY VALUE overrides.
exec "${PYTHON:-python}" "$(dirname "$0")/sweep.py" imb -- "$@"
