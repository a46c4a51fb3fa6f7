#!/usr/bin/env python
"""How well each selection rule of ``main.py select`` chooses, measured on a sweep that
has a validation split and the test labels (docs/results.md, "Choosing without peeking").

    python benchmarks/selection_study.py benchmarks/records/fashion_mnist_select

The sweep is ``benchmarks/fashion_mnist.py --table select``: supervised, FixMatch and
FineSSL, each at three learning rates, over seeds, with ``DATA.NUM_VAL 5``. For each
method and seed, every rule of :func:`finessl.report.select.picks` chooses a learning
rate and an epoch among the three runs' epochs, exactly as ``main.py select`` would on
those three folders; its gap to the test oracle (the best test top-1 among the same
candidates) is averaged over methods and seeds. Beside the rules: the last epoch of the
default recipe (the demo's learning rate), which needs no rule at all.

Then, for every SSL run and its supervised twin (same seed and learning rate): the
answer to "did the unlabeled data help?" from the validation split, and from the
label-free signals alone (the validation split hidden), each against the truth from
the test labels: the SSL run's test top-1 above its twin's, each run at the epoch
its validation top-1 picks (the last epoch for the label-free answer, which looks at
the last epochs).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from finessl.report import select  # noqa: E402
from finessl.report.runs import find_runs  # noqa: E402
from finessl.report.sweep import markdown  # noqa: E402

DEFAULT_LR = 0.01  # configs/demo/fashion_mnist_N4.yaml
DEFAULT = "last epoch of the default recipe (lr 0.01; no rule)"


def groups(runs) -> dict[tuple[str, int], list]:
    """(algorithm, seed) -> its runs (one per learning rate)."""
    out: dict[tuple[str, int], list] = {}
    for run in runs:
        out.setdefault((run.get("algorithm"), run.get("seed")), []).append(run)
    return out


def rule_gaps(runs) -> dict[str, list[float]]:
    """Each rule's gaps to the oracle (points), one per (algorithm, seed)."""
    gaps: dict[str, list[float]] = {}
    for (_, _), group in sorted(groups(runs).items()):
        chosen = select.picks(group)
        oracle = chosen[-1].test_top1
        for pick in chosen[:-1]:
            gaps.setdefault(pick.rule, []).append(100 * (pick.test_top1 - oracle))
        default = [r for r in group if abs(float(r.get("lr")) - DEFAULT_LR) < 1e-9]
        if default:
            gaps.setdefault(DEFAULT, []).append(100 * (default[0].history[-1]["top1"] - oracle))
    return gaps


def _val_pick(run) -> dict:
    return max(run.history, key=lambda e: e.get("val_top1", -1.0))


def _hidden_validation(run):
    """The run as a user without a validation split would have it."""
    return dataclasses.replace(run, diagnostics={**run.diagnostics, "num_val": 0})


def helped(runs) -> list[list[str]]:
    """Per SSL run: the validation answer, the label-free answer, and the test truth."""
    rows = []
    for ssl, twin in select.twins(runs):
        by_val = select.unlabeled_helped(ssl, twin)
        by_signals = select.unlabeled_helped(_hidden_validation(ssl), _hidden_validation(twin))
        truth_val = _val_pick(ssl)["top1"] > _val_pick(twin)["top1"]
        truth_last = ssl.history[-1]["top1"] > twin.history[-1]["top1"]
        rows.append([ssl.label, f"{by_val['answer']} ({by_val['confidence']})",
                     "yes" if truth_val else "no",
                     f"{by_signals['answer']} ({by_signals['confidence']})",
                     "yes" if truth_last else "no"])
    return rows


def agreement(rows, answer: int, truth: int) -> str:
    right = sum(r[answer].split()[0] == r[truth] for r in rows)
    unclear = sum(r[answer].split()[0] == "unclear" for r in rows)
    return f"{right} of {len(rows)} agree with the test labels ({unclear} unclear)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="the folder of benchmarks/fashion_mnist.py --table select")
    args = parser.parse_args(argv)
    runs = [r for r in find_runs([args.sweep]) if r.finished]
    gaps = rule_gaps(runs)
    n = len(groups(runs))
    print(f"{len(runs)} finished runs, {n} (method, seed) groups of learning rates\n")
    rows = [[rule, f"{statistics.fmean(abs(g) for g in values):.2f}",
             f"{max(abs(g) for g in values):.2f}", str(len(values))]
            for rule, values in sorted(gaps.items(), key=lambda kv: statistics.fmean(
                abs(g) for g in kv[1]))]
    print("\n".join(markdown(["rule", "mean |gap| to the oracle (points)", "worst",
                              "groups"], rows)))
    verdicts = helped(runs)
    print("\nDid the unlabeled data help? (each SSL run against its supervised twin)\n")
    print("\n".join(markdown(["run", "from validation", "test truth (val. epochs)",
                              "from label-free signals", "test truth (last epochs)"],
                             verdicts)))
    print(f"\nfrom validation: {agreement(verdicts, 1, 2)}; "
          f"from label-free signals: {agreement(verdicts, 3, 4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
