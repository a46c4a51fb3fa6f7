"""What a run records for its report (docs/results.md#the-run-report) beyond the test
metrics, and the report's figures in tensorboard.

After every epoch the trainer adds to that epoch's history entry: the pseudo-label
memory's statistics (accuracy over in-class images, out-of-class share, per-class
counts, from which the learning pace follows), the confidence histograms of the
epoch's steps (:class:`finessl.metrics.PseudoLabelStats`), the epoch mean of every
training log, and the test set's reliability bins of both heads. Rank 0 then writes
``diagnostics.json`` atomically: the history so far, the last confusion matrix, the
class names, the split hash and whether the aux head was trained, so a report can be
drawn from a run in progress as well as from a finished one. Per-epoch counts only,
never per-image dumps: the file stays small for a 1.28 M-image unlabeled pool.
"""
from __future__ import annotations

import json
import os

import torch

from finessl.io import atomic_write_text
from finessl.metrics import OUT_OF_CLASS, distribution_entropy, top1

DIAGNOSTICS = "diagnostics.json"
FORMAT = 1  # of diagnostics.json; a report refuses files of a newer format


def memory_record(memory: torch.Tensor, truth: torch.Tensor, num_classes: int) -> dict:
    """Statistics of the pseudo-label memory (one class or -1 per unlabeled image):
    entropy of its class distribution, accuracy over the images of a known class,
    share of the unlabeled set it covers, out-of-class share (images labelled -2 among
    those whose membership is known: not -1) and the count per class (sigma(k) of the
    learning pace, docs/method.md §3)."""
    chosen_mask = memory >= 0
    chosen = memory[chosen_mask]
    counts = torch.bincount(chosen, minlength=num_classes).cpu()
    truth = truth.to(memory.device)[chosen_mask]
    known = truth >= 0  # -1: class unknown (an own folder); -2: outside the label space
    outside = int((truth == OUT_OF_CLASS).sum())
    decided = int(known.sum()) + outside
    return {"pseudo_entropy": distribution_entropy(counts),
            "pseudo_acc": top1(chosen[known], truth[known]) if known.any() else 0.0,
            "pseudo_rate": chosen.numel() / max(memory.numel(), 1),
            "pseudo_ood": outside / max(decided, 1),
            "pseudo_counts": counts.tolist()}


def kept_ood_share(confidence: dict) -> float:
    """Out-of-class share of the epoch's kept pseudo-labels whose image is known to be
    in or out of class (from :meth:`PseudoLabelStats.record`)."""
    kept = confidence["kept"]
    return kept["out_of_class"] / max(kept["correct"] + kept["wrong"] + kept["out_of_class"], 1)


class EpochMeans:
    """The epoch mean of every training log, from the means of its logging windows
    (weighted by their steps). After a mid-epoch resume it covers the steps run since."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.logged: tuple[int, int] | None = None  # (epoch, steps) at the last window

    def add(self, means: dict[str, float], epoch: int, step: int, done: int) -> None:
        """A window ending after step ``step`` (0-based) of ``epoch``; ``done`` steps of
        the epoch have run in this process."""
        begin = self.logged[1] if self.logged and self.logged[0] == epoch else step + 1 - done
        steps = step + 1 - begin
        for k, v in means.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * steps
        self.steps += steps
        self.logged = (epoch, step + 1)

    def pop(self) -> dict[str, float]:
        means = {k: v / self.steps for k, v in sorted(self.sums.items())} if self.steps else {}
        self.sums, self.steps = {}, 0
        return means


def method_label(name: str, algorithm) -> str:
    """``flexmatch+bms+dls``: the algorithm's name, and each FineSSL component that is
    switched away from the algorithm's default (``+`` on, ``-`` off)."""
    default = getattr(algorithm, "uses_finessl_components", False)
    parts = [name]
    for component in ("bms", "dls"):
        value = getattr(algorithm, component, default)
        if value != default:
            parts.append(("+" if value else "-") + component)
    return "".join(parts)


def aux_trained(trainer) -> bool:
    """Whether the aux head learns in this run (DLS on); without DLS it stays as built."""
    return bool(getattr(trainer.algorithm, "dls", False))


def write(run_dir: str, trainer) -> None:
    """diagnostics.json of ``trainer`` (its history, last confusion matrix, data, algorithm)."""
    history = trainer.history
    record = {"format": FORMAT, "epoch": history[-1]["epoch"] if history else 0,
              "method": method_label(trainer.cfg.algorithm, trainer.algorithm),
              "classnames": list(trainer.data.classnames), "split_hash": trainer.data.split_hash,
              "aux_trained": aux_trained(trainer), "confusion": trainer.confusion,
              "history": history}
    atomic_write_text(json.dumps(record), os.path.join(run_dir, DIAGNOSTICS))


def to_tensorboard(writer, trainer, step: int) -> None:
    """The report's figures of the last epoch as tensorboard images (``report/...``).
    matplotlib is imported here, on rank 0 at the first epoch's end, not with the trainer."""
    from finessl.engine import figures
    history, names, aux = trainer.history, trainer.data.classnames, aux_trained(trainer)
    entry = history[-1]
    drawn = {"report/reliability": figures.reliability_diagram(entry, aux),
             "report/per_class": figures.per_class(entry, trainer.confusion, names)}
    if entry.get("confidence"):
        drawn["report/confidence"] = figures.confidence_histograms([entry], aux)
    if entry.get("pseudo_counts"):
        drawn["report/pace"] = figures.pace_heatmap(history, names)
    for tag, figure in drawn.items():
        writer.add_image(tag, figures.to_rgb(figure), step, dataformats="HWC")
    confidence_histograms(writer, entry.get("confidence"), step)


def confidence_histograms(writer, confidence: dict | None, step: int) -> None:
    """The paper's confidence figure as tensorboard histograms, from the epoch's bin
    counts: ``pseudo/confidence/{main,aux}/{correct,wrong,out_of_class,...}``, one per
    head and category that has pseudo-labels (the histogram tab overlays the epochs)."""
    if not confidence:
        return
    bins = confidence["bins"]
    edges = [(i + 1) / bins for i in range(bins)]
    for head in ("main", "aux"):
        for category, counts in confidence.get(head, {}).items():
            total = sum(counts)
            if not total:
                continue
            centres = [(i + 0.5) / bins for i in range(bins)]
            writer.add_histogram_raw(
                f"pseudo/confidence/{head}/{category}", min=0.0, max=1.0, num=total,
                sum=sum(c * n for c, n in zip(centres, counts)),
                sum_squares=sum(c * c * n for c, n in zip(centres, counts)),
                bucket_limits=edges, bucket_counts=counts, global_step=step)
