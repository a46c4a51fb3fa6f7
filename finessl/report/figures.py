"""The figures of one run (docs/results.md#the-run-report), drawn from what the run
records per epoch (its history entries and its last confusion matrix): the trainer
sends them to tensorboard after every epoch (:func:`epoch_images`, the one function
the engine calls here), ``main.py report`` writes them as PNG.

matplotlib's object API on the Agg canvas only (no pyplot, no display, no global
state); every function takes plain lists and dicts and returns a ``Figure``.
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLORS = {"correct": "tab:green", "wrong": "tab:red", "out_of_class": "tab:purple",
          "unknown": "tab:gray"}
LABELS = {"correct": "correct", "wrong": "wrong", "out_of_class": "out-of-class",
          "unknown": "class unknown"}
HEAD_TITLES = {"main": "main head f", "aux": "aux head f_aux"}


def new_figure(width: float, height: float) -> Figure:
    """A figure with fixed, generous margins: drawn every epoch for tensorboard, where a
    layout engine would double the cost; :func:`save_png` crops it to what it draws."""
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.08, right=0.97, bottom=0.2, top=0.88, wspace=0.35, hspace=0.6)
    FigureCanvasAgg(figure)
    return figure


def to_rgb(figure: Figure, dpi: int = 56) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array (what tensorboard's add_image takes)."""
    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(figure: Figure, path: str, dpi: int = 90) -> None:
    """Write the figure as a PNG, cropped to what it draws."""
    figure.savefig(path, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.1)


def _series(history: list[dict], key: str, part: str | None = None) -> tuple[list, list]:
    """(epochs, values) of ``key`` (in ``entry[part]`` when given) where recorded."""
    xs, ys = [], []
    for entry in history:
        source = entry.get(part, {}) if part else entry
        value = source.get(key) if isinstance(source, dict) else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(entry.get("epoch", len(xs) + 1))
            ys.append(value)
    return xs, ys


def learning_curves(runs: list[tuple[str, list[dict]]]) -> Figure:
    """Test accuracy, training losses, mask rate and pseudo-label accuracy per epoch.
    One run: top-1, balanced and aux-head top-1, every loss term, the memory's and the
    kept pseudo-labels' accuracy (and the out-of-class share where there is one).
    Several: one colour per run, its top-1, total loss, mask rate and memory accuracy."""
    figure = new_figure(13, 3.3 if len(runs) < 6 else 4.2)
    acc, losses, mask, pseudo = figure.subplots(1, 4)
    if len(runs) == 1:
        history = runs[0][1]
        for key, style, label in (("top1", "-", "top-1"), ("balanced_acc", "--", "balanced"),
                                  ("top1_aux", ":", "top-1, aux head")):
            acc.plot(*_series(history, key), ls=style, marker=".", label=label)
        terms = sorted({k for e in history for k in e.get("train", {}) if k.startswith("loss/")})
        for term in terms:
            losses.plot(*_series(history, term, "train"), label=term[5:])
        mask.plot(*_series(history, "pseudo/mask_rate", "train"), label="kept")
        pseudo.plot(*_series(history, "pseudo_acc"), marker=".", label="epoch memory")
        pseudo.plot(*_series(history, "pseudo/acc_masked", "train"), ls="--",
                    label="kept, per step")
        xs, ys = _series(history, "pseudo_ood")
        if any(ys):
            pseudo.plot(xs, ys, ls=":", label="out-of-class share")
    else:
        for i, (label, history) in enumerate(runs):
            color = line_color(i, len(runs))
            acc.plot(*_series(history, "top1"), color=color, marker=".", label=label)
            losses.plot(*_series(history, "loss/total", "train"), color=color)
            mask.plot(*_series(history, "pseudo/mask_rate", "train"), color=color)
            pseudo.plot(*_series(history, "pseudo_acc"), color=color)
    for ax, title in ((acc, "test accuracy"), (losses, "training losses (epoch mean)"),
                      (mask, "mask rate (epoch mean)"), (pseudo, "pseudo-label accuracy")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        elif len(runs) == 1 or ax is acc:
            ax.legend(fontsize=6 if len(runs) > 4 else 7)
    return figure


def line_color(i: int, n: int):
    """The i-th of n distinct colours (tab10, or tab20 for more than 10)."""
    return colormaps["tab20" if n > 10 else "tab10"](i % 20 if n > 10 else i % 10)


def pace_heatmap(history: list[dict], classnames: list[str]) -> Figure:
    """The learning pace beta(k) = sigma(k) / max sigma (docs/method.md §3) of every
    class at the end of every epoch: what BMS evens out."""
    rows = [(e["epoch"], e["pseudo_counts"]) for e in history if e.get("pseudo_counts")]
    figure = new_figure(max(6.0, 0.25 * len(classnames) + 2), 3.2)
    ax = figure.subplots()
    ax.set_title("per-class learning pace beta (confident pseudo-labels per class / max)",
                 fontsize=10)
    if not rows:
        ax.text(0.5, 0.5, "not recorded (no pseudo-labels in this run)", ha="center",
                va="center", transform=ax.transAxes)
        return figure
    counts = np.array([c for _, c in rows], dtype=float)
    pace = counts / np.maximum(counts.max(axis=1, keepdims=True), 1.0)
    image = ax.imshow(pace, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(rows)), [str(e) for e, _ in rows], fontsize=7)
    ax.set_ylabel("epoch")
    _class_ticks(ax.set_xticks, classnames)
    figure.colorbar(image, ax=ax, label="beta")
    return figure


def _class_ticks(set_ticks, classnames: list[str], rotation: int = 90, limit: int = 40) -> None:
    """At most ``limit`` class names along an axis (every k-th of a long list)."""
    step = max(1, math.ceil(len(classnames) / limit))
    ticks = list(range(0, len(classnames), step))
    set_ticks(ticks, [classnames[i][:12] for i in ticks], fontsize=7, rotation=rotation)


def confidence_histograms(entries: list[dict], aux_trained: bool) -> Figure:
    """Confidence of the pseudo-labels, correct against wrong (and out-of-class /
    class unknown where the unlabeled set has such images), of the main head and of
    the aux head, one column per epoch entry: the cognitive deviation DLS calibrates."""
    entries = [e for e in entries if e.get("confidence")]
    columns = max(len(entries), 1)
    figure = new_figure(3.6 * columns + 0.5, 5.0)
    axes = np.atleast_2d(figure.subplots(2, columns, squeeze=False))
    if not entries:
        axes[0, 0].text(0.5, 0.5, "not recorded (no pseudo-labels in this run)",
                        ha="center", va="center", transform=axes[0, 0].transAxes)
        return figure
    for col, entry in enumerate(entries):
        record = entry["confidence"]
        edges = np.linspace(0, 1, record["bins"] + 1)
        for row, head in enumerate(("main", "aux")):
            ax = axes[row, col]
            for category, counts in record[head].items():
                if sum(counts):
                    ax.stairs(counts, edges, color=COLORS[category], fill=True, alpha=0.35,
                              label=f"{LABELS[category]} ({sum(counts)})")
                    ax.stairs(counts, edges, color=COLORS[category])
            note = "" if head == "main" or aux_trained else " (not trained: dls off)"
            ax.set_title(f"epoch {entry['epoch']}: {HEAD_TITLES[head]}{note}", fontsize=9)
            ax.set_xlabel("confidence")
            ax.set_ylabel("pseudo-labels")
            if ax.patches:
                ax.legend(fontsize=7)
    return figure


def reliability_diagram(entry: dict, aux_trained: bool) -> Figure:
    """Test-set accuracy against confidence in the ECE bins, main and aux head."""
    figure = new_figure(8, 3.6)
    axes = figure.subplots(1, 2)
    bins = entry.get("reliability") or {}
    for ax, head in zip(axes, ("main", "aux")):
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        record = bins.get(head)
        if not record:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        count = np.array(record["count"], dtype=float)
        n = len(count)
        seen = count > 0
        centers = (np.arange(n) + 0.5) / n
        accuracy = np.divide(record["correct"], count, out=np.zeros(n), where=seen)
        confidence = np.divide(record["conf_sum"], count, out=np.zeros(n), where=seen)
        ax.bar(centers, count / max(count.sum(), 1), width=1 / n, color="lightgray",
               label="share of test images")
        ax.bar(centers[seen], accuracy[seen], width=0.6 / n, edgecolor="black", lw=0.5,
               color="tab:blue", label="accuracy")
        ax.plot(centers[seen], confidence[seen], "o", color="tab:red", ms=4,
                label="mean confidence")
        key = "ece" if head == "main" else "ece_aux"
        ece = entry.get(key)
        note = "" if head == "main" or aux_trained else " (not trained: dls off)"
        title = f"{HEAD_TITLES[head]}{note}" + (f", ECE {ece:.4f}" if ece is not None else "")
        ax.set_title(f"epoch {entry.get('epoch')}: {title}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return figure


def per_class(entry: dict, confusion: list[list[int]] | None, classnames: list[str]) -> Figure:
    """Per-class test accuracy and the row-normalised confusion matrix."""
    figure = new_figure(max(10.0, 0.3 * len(classnames) + 6), 4.2)
    bars, matrix = figure.subplots(1, 2, width_ratios=[1.3, 1])
    acc = np.nan_to_num(np.array(entry.get("per_class_acc", []), dtype=float))
    bars.bar(range(len(acc)), 100 * acc, color="tab:blue")
    bars.axhline(100 * entry.get("balanced_acc", float("nan")), color="black", ls="--", lw=1,
                 label="balanced accuracy")
    bars.set_ylim(0, 100)
    bars.set_ylabel("test accuracy (%)")
    bars.set_title(f"epoch {entry.get('epoch')}: per-class test accuracy", fontsize=10)
    bars.legend(fontsize=7)
    _class_ticks(bars.set_xticks, classnames)
    if confusion:
        counts = np.array(confusion, dtype=float)
        rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        image = matrix.imshow(rows, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        figure.colorbar(image, ax=matrix, label="share of the true class")
        _class_ticks(matrix.set_xticks, classnames)
        _class_ticks(matrix.set_yticks, classnames, rotation=0)
        matrix.set_xlabel("predicted")
        matrix.set_ylabel("true")
    else:
        matrix.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=matrix.transAxes)
    matrix.set_title("confusion matrix (test set)", fontsize=10)
    return figure


def epoch_images(history: list[dict], confusion: list[list[int]] | None,
                 classnames: list[str], aux_trained: bool) -> dict[str, np.ndarray]:
    """The report's figures of the last epoch of ``history``, as (H, W, 3) images by
    tensorboard tag (``report/...``): what the trainer shows after every epoch."""
    entry = history[-1]
    drawn = {"report/reliability": reliability_diagram(entry, aux_trained),
             "report/per_class": per_class(entry, confusion, classnames)}
    if entry.get("confidence"):
        drawn["report/confidence"] = confidence_histograms([entry], aux_trained)
    if entry.get("pseudo_counts"):
        drawn["report/pace"] = pace_heatmap(history, classnames)
    return {tag: to_rgb(figure) for tag, figure in drawn.items()}
