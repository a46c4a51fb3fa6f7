#!/usr/bin/env python
"""Markdown table of a sweep: test top-1 (%), mean ± std over seeds.

    python scripts/summarize.py out/table1                 # last-epoch top-1 + paper row
    python scripts/summarize.py out/table6 --metric best_val   # at the best validation epoch

``--metric``: ``last`` (default), ``best_val`` (the test top-1 at the best validation
epoch: runs with DATA.NUM_VAL), ``best_test`` (the best test epoch: an oracle, which
chooses with the test labels; ``best`` is its older name). See docs/selection.md.

The table of ``main.py report`` (``finessl.report.sweep.table``), printed in markdown:
every finished run (``results.json``) below ROOT, a column per setting (the config's
name), a row per method (the folder above ``seed<s>``, as the sweeps of
``scripts/sweep.py`` lay them out), in the algorithms' order. A cell is the mean ±
sample std over the runs found, with their number when fewer than 3. The "FineSSL
(paper)" row (by default when a setting's runs record one) shows the figure each
config declares (``paper_top1``: the shipped paper settings carry the FineSSL numbers
of docs/method.md §6); ``--no-paper`` drops it, ``--paper`` forces it. Where configs
declare other methods' published figures (``reference_top1``: the long-tailed configs
carry USB's), a second table sets ours beside them. ``--against METHOD`` adds the
paired comparison of METHOD against every other method of each setting: the mean
difference over the seeds both ran and its 95 % t-interval (``main.py report``'s).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from finessl.errors import UserError  # noqa: E402
from finessl.io import RESULTS  # noqa: E402
from finessl.report import sweep as tables  # noqa: E402
from finessl.report.runs import find_runs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="ROOT", help="sweep folder, e.g. out/table1")
    parser.add_argument("--metric", choices=sorted(tables.METRICS), default="last",
                        help="top-1 of the last epoch (default), of the best validation "
                             "epoch, or of the best test epoch (an oracle; 'best' = best_test); "
                             "or the last epoch's balanced accuracy, or its accuracy over the "
                             "head, medium or tail classes of a long-tailed labeled set")
    parser.add_argument("--paper", action=argparse.BooleanOptionalAction, default=None,
                        help="add the row of the paper's figures the configs declare "
                             "(default: when any run records one)")
    parser.add_argument("--against", metavar="METHOD", default=None,
                        help="add METHOD minus each other method, paired by seed, with its "
                             "95 %% confidence interval (e.g. --against finessl)")
    args = parser.parse_args(argv)
    try:
        runs = find_runs([args.root])
        if not any(run.finished for run in runs):
            raise UserError(f"{args.root} holds no finished run: no {RESULTS} below it")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paired = tables.paired(runs, args.metric, args.against) if args.against else None
    if paired is not None and not any(run.method == args.against and run.finished
                                      for run in runs):
        print(f"error: --against {args.against}: no finished run of that method in "
              f"{args.root}", file=sys.stderr)
        return 2
    oracle = (" (an oracle: chosen with the test labels)"
              if args.metric in ("best", "best_test") else "")
    what = (f"Test top-1 (%) at the {args.metric} epoch{oracle}" if args.metric in
            ("last", "best_val", "best_test", "best") else
            "Balanced test accuracy (%) at the last epoch" if args.metric == "balanced" else
            f"Test accuracy (%) over the {args.metric} classes at the last epoch")
    print(f"{what}, mean ± std over seeds ({args.root})\n")
    print("\n".join(tables.markdown(*tables.table(runs, args.metric, args.paper))))
    header, rows = tables.side_by_side(runs, args.metric)
    if rows and args.paper is not False:
        print("\nBeside the published figures the configs declare (reference_top1; the "
              "long-tailed configs: USB's, WRN-28-2 trained from scratch, not CLIP):\n")
        print("\n".join(tables.markdown(header, rows)))
    if args.against and not paired[1]:  # a sweep still running: the table, no pairs yet
        print(f"\nno method shares 2 finished seeds with {args.against} yet (a paired "
              f"interval needs 2)")
    elif args.against:
        header, rows = paired
        print(f"\n{args.against} minus each method, paired by seed, 95 % confidence "
              f"interval:\n")
        print("\n".join(tables.markdown(header, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
