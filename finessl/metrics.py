"""Evaluation and pseudo-label diagnostics (the quantities the paper plots)."""
from __future__ import annotations

import torch


def top1(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of predictions equal to the targets."""
    return (preds == targets).float().mean().item()


def per_class_accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of each class (NaN for a class absent from ``targets``); their mean over
    present classes is the balanced accuracy."""
    total = torch.bincount(targets, minlength=num_classes).float()
    hits = torch.bincount(targets[preds == targets], minlength=num_classes).float()
    return hits / total


def per_class_precision(confusion: list[list[int]]) -> list[float]:
    """Precision of each class from a confusion matrix (rows: true class, columns:
    predicted): hits over predictions of the class (NaN for a class never predicted).
    Per-class recall is :func:`per_class_accuracy`."""
    matrix = torch.tensor(confusion, dtype=torch.float64)
    return (matrix.diagonal() / matrix.sum(dim=0)).tolist()


GROUPS = ("head", "medium", "tail")


def class_groups(counts: list[int]) -> dict[str, list[int]] | None:
    """Head, medium and tail classes of a long-tailed labeled set: its classes by
    labeled images, most first (ties by class index), cut into thirds; the head and
    the tail get ceil(C/3) classes each, the medium the rest (CIFAR-10-LT: 4 / 2 / 4).
    None when every class has as many labeled images (a balanced split)."""
    if len(set(counts)) <= 1:
        return None
    order = sorted(range(len(counts)), key=lambda k: (-counts[k], k))
    third = -(-len(counts) // 3)
    return {"head": sorted(order[:third]), "medium": sorted(order[third:len(counts) - third]),
            "tail": sorted(order[len(counts) - third:])}


def group_accuracies(per_class: list[float], groups: dict[str, list[int]]) -> dict[str, float]:
    """``<group>_acc``: the mean accuracy of each group's classes (NaN classes, absent
    from the test set, left out; NaN for a group with none)."""
    out = {}
    for name in GROUPS:
        values = [per_class[k] for k in groups[name] if per_class[k] == per_class[k]]
        out[f"{name}_acc"] = sum(values) / len(values) if values else float("nan")
    return out


def distribution_entropy(counts: torch.Tensor) -> float:
    """Entropy (nats) of the class distribution given by ``counts``; 0 when empty.

    log(C) means pseudo-labels spread evenly over the C classes; lower means the
    pseudo-labels pile onto a few classes (the aggregated bias BMS erases).
    """
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts.float() / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def expected_calibration_error(conf: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| * share."""
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].float().mean() - conf[in_bin].mean()).abs()
    return float(ece)


# ---- what the run report plots (docs/results.md#the-run-report) ------------------------
# True labels of unlabeled images that are no class: unknown (an own folder), and known
# to lie outside the label space (Semi-Aves' out-of-class images, open-set pools).
UNKNOWN, OUT_OF_CLASS = -1, -2
CATEGORIES = ("correct", "wrong", "out_of_class", "unknown")  # of a pseudo-label, by its truth
CONFIDENCE_BINS = 20  # equal-width bins over [0, 1] of the pseudo-label confidence histograms
RELIABILITY_BINS = 15  # those of expected_calibration_error


def pseudo_label_category(targets: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Index into :data:`CATEGORIES` of each pseudo-label: right or wrong for an image of
    a known class, out-of-class for a true label of -2 (an image known to belong to no
    class of the label space), unknown for -1 (a user's own unlabeled folder)."""
    in_class = torch.where(targets == truth, 0, 1)
    return torch.where(truth >= 0, in_class, torch.where(truth == OUT_OF_CLASS, 2, 3))


def confidence_counts(conf: torch.Tensor, category: torch.Tensor,
                      bins: int = CONFIDENCE_BINS) -> torch.Tensor:
    """Histogram of ``conf`` per category: a (len(CATEGORIES), bins) count tensor, bin
    ``b`` holding [b / bins, (b + 1) / bins) and 1.0 in the last bin. One scatter-add
    of the batch into a fixed tensor: O(batch), no host synchronisation."""
    which = (conf.float() * bins).long().clamp(0, bins - 1)
    index = category.long() * bins + which
    flat = torch.zeros(len(CATEGORIES) * bins, dtype=torch.long, device=conf.device)
    return flat.scatter_add_(0, index, torch.ones_like(index)).view(len(CATEGORIES), bins)


def reliability_bins(conf: torch.Tensor, correct: torch.Tensor,
                     bins: int = RELIABILITY_BINS) -> dict[str, list]:
    """What a reliability diagram draws, in the bins of :func:`expected_calibration_error`
    ((k / bins, (k + 1) / bins]): per bin the number of predictions, the sum of their
    confidences and the number of correct ones."""
    which = (torch.ceil(conf.float() * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(which, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, conf.double())
    hits = torch.bincount(which[correct.bool()], minlength=bins)
    return {"count": count.tolist(), "conf_sum": conf_sum.tolist(), "correct": hits.tolist()}


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true class, predicted class) counts, a (C, C) tensor."""
    flat = torch.bincount(targets.long() * num_classes + preds.long(),
                          minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


class PseudoLabelStats:
    """One epoch's counts behind the report's confidence histograms, on the device.

    For every unlabeled image of every step: the main head's confidence in its
    pseudo-label (its softmax probability of the pseudo-label's class) and the aux
    head's confidence (its top softmax probability: the weight DLS gives the image),
    each counted in :data:`CONFIDENCE_BINS` bins per :data:`CATEGORIES` entry; and
    the number of kept (masked-in) pseudo-labels per category. Scatter-adds into fixed
    tensors: O(batch) per step, no host synchronisation; read once per epoch."""

    HEADS = ("main", "aux")

    def __init__(self, device: torch.device | str = "cpu"):
        self.confidence = torch.zeros(len(self.HEADS), len(CATEGORIES), CONFIDENCE_BINS,
                                      dtype=torch.long, device=device)
        self.kept = torch.zeros(len(CATEGORIES), dtype=torch.long, device=device)

    def reset(self) -> None:
        self.confidence.zero_()
        self.kept.zero_()

    def update(self, conf_main: torch.Tensor, conf_aux: torch.Tensor, category: torch.Tensor,
               kept: torch.Tensor) -> None:
        for head, conf in enumerate((conf_main, conf_aux)):
            self.confidence[head] += confidence_counts(conf, category)
        self.kept.scatter_add_(0, category.long(), kept.long())

    def record(self) -> dict:
        """Plain lists (JSON, checkpoints): {"bins", "main": {category: counts}, "aux":
        ..., "kept": {category: n}}."""
        counts = self.confidence.tolist()
        out = {"bins": CONFIDENCE_BINS, "kept": dict(zip(CATEGORIES, self.kept.tolist()))}
        out.update({head: dict(zip(CATEGORIES, rows)) for head, rows in zip(self.HEADS, counts)})
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors, merged into the algorithm's state (a mid-epoch resume keeps the
        epoch's counts)."""
        return {"stats_confidence": self.confidence.clone(), "stats_kept": self.kept.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s keys from ``state``; a checkpoint written before
        the run report has none (the counts of that epoch start from zero)."""
        if "stats_confidence" in state:
            self.confidence.copy_(state["stats_confidence"].to(self.confidence.device))
            self.kept.copy_(state["stats_kept"].to(self.kept.device))
