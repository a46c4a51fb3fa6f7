#!/usr/bin/env python
"""Markdown table of a sweep: test top-1 (%), mean ± std over seeds.

    python scripts/summarize.py out/table1                 # last-epoch top-1 + paper row
    python scripts/summarize.py out/table6 --metric best   # best-epoch top-1

Reads every ``results.json`` (written by ``finessl.engine.run`` when a run finishes)
under ROOT/<setting>/<method>/..., as laid out by ``scripts/table1.sh``,
``scripts/table6.sh`` and ``scripts/run_peft.sh``: a column is named by its folder, the
config's own name. Rows are methods; a cell is the mean ± sample std over the runs
found, with their number when fewer than 3. ``--paper`` (on by default when a setting's
runs record one) adds the row of the figure each config declares (``paper_top1``: the
shipped paper settings carry the FineSSL numbers of docs/method.md §6; a config that
declares none shows '-'). Standard library only, so it runs wherever the results are
copied to.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

RESULTS = "results.json"
METRICS = {"last": "last_top1", "best": "best_top1"}

# Column order: Table 1's settings as the paper orders them, then the others by name.
SETTING_ORDER = ["cifar10_N1", "cifar10_N2", "cifar10_N4", "cifar100_N4", "cifar100_N25",
                 "cifar100_N100", "food101_N2", "food101_N4", "food101_N10"]
PAPER_ROW = "FineSSL (paper)"

# Row order: baselines and Table 1 methods as in the paper, then Table 6's variants
# (fixmatch, +bms, +dls, finessl, ablations of finessl), then run_peft.sh's folder.
METHOD_ORDER = [
    "zeroshot", "supervised", "pseudolabel", "fixmatch", "flexmatch", "freematch",
    "softmatch", "debiaspl", "fixmatch+bms", "fixmatch+dls", "finessl", "fixed_alpha",
    "no_margin_labeled", "no_smoothing", "aux_not_detached", "vpt_deep",
]


def warn(message: str) -> None:
    print(f"summarize.py: warning: {message}", file=sys.stderr)


def collect(root: str, key: str) -> tuple[dict[tuple[str, str], list[float]], dict[str, float]]:
    """((setting, method) -> top-1 in % of every finished run below ROOT/setting/method,
    setting -> the paper's figure its runs record)."""
    values: dict[tuple[str, str], list[float]] = {}
    paper: dict[str, float] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RESULTS not in filenames:
            continue
        path = os.path.join(dirpath, RESULTS)
        parts = os.path.relpath(dirpath, root).split(os.sep)
        if len(parts) < 2:
            warn(f"ignoring {path}: not under ROOT/<setting>/<method>/")
            continue
        try:
            with open(path) as f:
                result = json.load(f)
            top1 = float(result[key])
        except (OSError, ValueError, KeyError, TypeError) as e:
            warn(f"ignoring {path}: cannot read {key} ({e.__class__.__name__}: {e})")
            continue
        values.setdefault((parts[0], parts[1]), []).append(100.0 * top1)
        figure = result.get("paper_top1")
        if isinstance(figure, (int, float)) and not isinstance(figure, bool):
            paper.setdefault(parts[0], float(figure))
    return values, paper


def ordered(names, known) -> list[str]:
    """Names in the order of ``known`` first, the others alphabetically after."""
    rank = {name: i for i, name in enumerate(known)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def cell(runs: list[float]) -> str:
    """'mean ± std' (sample std), with the number of runs when fewer than 3."""
    if len(runs) == 1:
        return f"{runs[0]:.2f} (n=1)"
    text = f"{statistics.fmean(runs):.2f} ± {statistics.stdev(runs):.2f}"
    return text + (f" (n={len(runs)})" if len(runs) < 3 else "")


def table(values: dict[tuple[str, str], list[float]], paper: dict[str, float] | None) -> list[str]:
    """The markdown rows; ``paper``: setting -> figure for the paper row (None: no row)."""
    settings = ordered((s for s, _ in values), SETTING_ORDER)
    methods = ordered((m for _, m in values), METHOD_ORDER)
    lines = ["| method | " + " | ".join(settings) + " |",
             "|---" * (len(settings) + 1) + "|"]
    for method in methods:
        cells = [cell(values[s, method]) if (s, method) in values else "-" for s in settings]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if paper is not None:
        cells = [f"{paper[s]:.2f}" if s in paper else "-" for s in settings]
        lines.append(f"| {PAPER_ROW} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="ROOT", help="sweep folder, e.g. out/table1")
    parser.add_argument("--metric", choices=sorted(METRICS), default="last",
                        help="top-1 of the last epoch (default) or of the best epoch")
    parser.add_argument("--paper", action=argparse.BooleanOptionalAction, default=None,
                        help="add the row of the paper's figures the configs declare "
                             "(default: when any run records one)")
    args = parser.parse_args(argv)
    key = METRICS[args.metric]
    values, figures = collect(args.root, key) if os.path.isdir(args.root) else ({}, {})
    if not values:
        print(f"summarize.py: no {RESULTS} with {key} under {args.root}", file=sys.stderr)
        return 2
    show = bool(figures) if args.paper is None else args.paper
    print(f"Test top-1 (%) at the {args.metric} epoch, mean ± std over seeds "
          f"({args.root})\n")
    print("\n".join(table(values, figures if show else None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
