"""Several runs side by side: the method-by-setting table of mean +- std over seeds, its
bar chart with the paper's number where the config declares one (``paper_top1``),
FineSSL against each other method paired by seed, and the learning curves overlaid
(the mean over seeds of each method and setting)."""
from __future__ import annotations

import math
import re
import statistics

import numpy as np

from finessl.algorithms import ALGORITHMS
from finessl.report import figures
from finessl.report.runs import Run

# How a run's epoch is chosen -> its results.json key (docs/selection.md): the last
# epoch; the best validation epoch (DATA.NUM_VAL); the best test epoch, an oracle that
# chooses with the test labels ('best', its older name, is an alias of it).
METRICS = {"last": "last_top1", "best_val": "best_val_top1", "best_test": "best_test_top1",
           "best": "best_test_top1"}
PAPER_ROW = "FineSSL (paper)"
MISSING = "–"  # a cell with no finished run


def _natural(name: str):
    """cifar10_N4 before cifar10_N25: numbers compare as numbers."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def method_rank(name: str) -> tuple:
    """A row's place: the algorithms in their ``order`` (the paper's for the built-ins,
    declared in each algorithm's file, so a new one needs no list edited here), each
    followed by its variants named ``<algorithm>+...`` (``fixmatch+bms``,
    ``flexmatch+bms+dls``); the other rows (Table 6's ablations, a sweep's own labels)
    after them, by name."""
    base = name.split("+", 1)[0]
    if base in ALGORITHMS:
        return (0, ALGORITHMS.get(base).order, base, name)
    return (1, 0, "", name)


def ordered_methods(names) -> list[str]:
    return sorted(set(names), key=method_rank)


def ordered_settings(names) -> list[str]:
    return sorted(set(names), key=_natural)


def _scores(runs: list[Run], metric: str):
    """((method, setting), seed, test top-1 in %) of each finished run, in the runs' order
    (``best_val``: of those with a validation split)."""
    key = METRICS[metric]
    found = [(run, run.summary().get(key)) for run in runs if run.finished]
    return [((run.method, run.setting), run.get("seed"), 100.0 * value)
            for run, value in found if value is not None]


def values(runs: list[Run], metric: str) -> dict[tuple[str, str], list[float]]:
    """(method, setting) -> test top-1 in % of each finished run, in the runs' order."""
    out: dict[tuple[str, str], list[float]] = {}
    for group, _, top1 in _scores(runs, metric):
        out.setdefault(group, []).append(top1)
    return out


def cell(runs: list[float]) -> str:
    """'mean ± std' (sample std over seeds), with the number of runs when fewer than 3."""
    if len(runs) == 1:
        return f"{runs[0]:.2f} (n=1)"
    text = f"{statistics.fmean(runs):.2f} ± {statistics.stdev(runs):.2f}"
    return text + (f" (n={len(runs)})" if len(runs) < 3 else "")


# Student's t, the two-sided 95 % quantile by degrees of freedom (a t table's values).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}


def t_quantile(df: int) -> float:
    """The two-sided 95 % quantile of Student's t: the table's value up to 10 degrees of
    freedom, then the Cornish-Fisher expansion around the normal one (within 0.003)."""
    if df in T_975:
        return T_975[df]
    z = statistics.NormalDist().inv_cdf(0.975)
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def by_seed(runs: list[Run], metric: str) -> dict[tuple[str, str], dict]:
    """(method, setting) -> {seed: test top-1 in %} of the finished runs."""
    out: dict[tuple[str, str], dict] = {}
    for group, seed, top1 in _scores(runs, metric):
        out.setdefault(group, {})[seed] = top1
    return out


def paired(runs: list[Run], metric: str, against: str = "finessl", methods=None
           ) -> tuple[list[str], list[list[str]]]:
    """``against`` minus each other method of its settings (or only ``methods``), over
    the seeds both have. Runs of one seed draw the same sample order and augmentations
    (the samplers depend on the seed alone), so the difference per seed is the
    comparison with that noise removed. Mean difference, its 95 % confidence interval
    (Student's t with n - 1 degrees of freedom) and what the interval says; pairs with
    fewer than 2 common seeds are left out."""
    found = by_seed(runs, metric)
    rows = []
    for setting in ordered_settings(s for _, s in found):
        ours = found.get((against, setting))
        if ours is None:
            continue
        for method in ordered_methods(m for m, s in found if s == setting and m != against
                                      and (methods is None or m in methods)):
            theirs = found[method, setting]
            seeds = sorted(set(ours) & set(theirs), key=str)
            if len(seeds) < 2:
                continue
            diff = [ours[seed] - theirs[seed] for seed in seeds]
            mean = statistics.fmean(diff)
            half = t_quantile(len(diff) - 1) * statistics.stdev(diff) / math.sqrt(len(diff))
            verdict = (f"{against} ahead" if mean - half > 0 else
                       f"{against} behind" if mean + half < 0 else "not significant")
            rows.append([setting, method, str(len(diff)), f"{mean:+.2f}",
                         f"[{mean - half:+.2f}, {mean + half:+.2f}]", verdict])
    return ["setting", "method", "seeds", f"{against} − method", "95 % CI", "at 95 %"], rows


def paper_numbers(runs: list[Run]) -> dict[str, float]:
    """setting -> the paper's top-1 (%), where a run's config declares one."""
    out = {}
    for run in runs:
        paper = run.get("paper_top1")
        if isinstance(paper, (int, float)) and not isinstance(paper, bool):
            out[run.setting] = float(paper)
    return out


def table(runs: list[Run], metric: str, paper: bool | None = None
          ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per method, one column per setting, and the row of the
    paper's numbers (``paper``: always, never, or None: when any setting has one)."""
    found = values(runs, metric)
    settings = ordered_settings(s for _, s in found)
    header = ["method"] + settings
    rows = [[m] + [cell(found[m, s]) if (m, s) in found else MISSING for s in settings]
            for m in ordered_methods(m for m, _ in found)]
    numbers = paper_numbers(runs)
    if paper or (paper is None and any(s in numbers for s in settings)):
        rows.append([PAPER_ROW] + [f"{numbers[s]:.2f}" if s in numbers else MISSING
                                   for s in settings])
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    """A table as the lines of a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def bar_chart(runs: list[Run], metric: str):
    """Mean ± std over seeds per method, grouped by setting; the paper's number as a
    black mark over each setting that has one."""
    found = values(runs, metric)
    settings = ordered_settings(s for _, s in found)
    methods = ordered_methods(m for m, _ in found)
    paper = paper_numbers(runs)
    figure = figures.new_figure(max(6.0, 0.45 * len(found) + 2.5 * len(settings)), 4.2)
    ax = figure.subplots()
    width = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        xs, means, stds = [], [], []
        for i, setting in enumerate(settings):
            if (method, setting) in found:
                got = found[method, setting]
                xs.append(i - 0.4 + width * (j + 0.5))
                means.append(statistics.fmean(got))
                stds.append(statistics.stdev(got) if len(got) > 1 else 0.0)
        bars = ax.bar(xs, means, width * 0.9, yerr=stds, capsize=2, label=method,
                      color=figures.line_color(j, len(methods)))
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
    for i, setting in enumerate(settings):
        if setting in paper:
            ax.hlines(paper[setting], i - 0.45, i + 0.45, color="black", lw=2,
                      label=PAPER_ROW if i == min(k for k, s in enumerate(settings) if s in paper)
                      else None)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel(f"test top-1 (%), {metric} epoch")
    ax.set_title("mean ± std over seeds", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """Epoch by epoch (as far as every run has got), the mean of each numeric entry and
    of each training log."""
    out = []
    for entries in zip(*histories):
        mean = {"epoch": entries[0]["epoch"]}
        for key in entries[0]:
            got = [e.get(key) for e in entries]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in got):
                mean[key] = float(np.mean(got))
        trains = [e.get("train", {}) for e in entries]
        mean["train"] = {k: float(np.mean([t[k] for t in trains]))
                         for k in trains[0] if all(k in t for t in trains)}
        out.append(mean)
    return out


def curves(runs: list[Run]):
    """The learning curves of every method and setting, mean over its seeds."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.setting), []).append(run)
    lines = []
    for setting in ordered_settings(s for _, s in groups):
        for method in ordered_methods(m for m, s in groups if s == setting):
            group = groups[method, setting]
            label = f"{method} {setting}" + (f" ({len(group)} seeds)" if len(group) > 1 else "")
            lines.append((label, mean_history([r.history for r in group])))
    return figures.learning_curves(lines)
