"""What a run records: the training logs of every logging window (log.txt, tensorboard,
the progress bar), and per epoch, for its report (docs/results.md#the-run-report),
what it records beyond the test metrics, and the report's figures in tensorboard.

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
import logging
import os

import numpy as np
import torch

from finessl.io import atomic_write_text
from finessl.logs import PROGRESS
from finessl.metrics import (OUT_OF_CLASS, class_groups, distribution_entropy,
                             group_accuracies, per_class_precision, top1)

log = logging.getLogger(__name__)
progress = logging.getLogger(PROGRESS)

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


class NullWriter:
    """Stands in for the SummaryWriter on ranks other than 0."""

    def add_scalar(self, *args, **kwargs):
        pass

    add_histogram = add_histogram_raw = add_image = add_scalar
    close = add_scalar


def open_writer(run_dir: str, global_step: int, is_main: bool):
    """The run's tensorboard writer (rank 0; the others write nothing), with whatever
    a killed run logged beyond ``global_step`` purged, so a resume does not log twice."""
    if not is_main:
        return NullWriter()
    from torch.utils.tensorboard import SummaryWriter  # not with the report, which reads this file
    return SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=global_step)


def log_parameter_counts(model, params: list) -> None:
    """How much a run trains (docs/models.md compares the strategies by it)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in params)
    heads = sum(p.numel() for m in (model.head, model.aux_head) for p in m.parameters())
    log.info("parameters: total %d, trainable %d, trainable without heads %d",
             total, trainable, trainable - heads)


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


class StepWindow:
    """The sums of the training logs since the last logged line, kept on the device: no
    host synchronisation per step, one all-reduce per window (:meth:`means`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, logs: dict) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + torch.as_tensor(
                v, dtype=torch.float32, device=self.device).detach()
        self.steps += 1

    def means(self, dist) -> dict[str, float]:
        """The mean of every log over the window's steps and every rank; starts a new window."""
        keys = sorted(self.sums)  # one all-reduce: the mean over ranks and steps
        sums = dist.sum(torch.stack([self.sums[k] for k in keys])) / dist.world
        means = dict(zip(keys, (sums / self.steps).tolist()))
        self.sums.clear()
        self.steps = 0
        return means


def log_window(trainer, epoch: int, step: int, done: int, means: dict, writer, bar) -> None:
    """A window's means (it ends after step ``step`` of ``epoch``; ``done`` steps of the
    epoch ran in this process): into the epoch means, tensorboard, the progress bar and
    log.txt (with the time left)."""
    cfg = trainer.cfg
    lr = trainer.optim.param_groups[0]["lr"]
    trainer.epoch_means.add(means, epoch, step, done)
    for k, v in means.items():
        writer.add_scalar(f"train/{k}", v, trainer.global_step)
    writer.add_scalar("train/lr", lr, trainer.global_step)
    bar.set_postfix(loss=f"{means['loss/total']:.4f}",
                    mask=f"{means.get('pseudo/mask_rate', 0):.2f}", lr=f"{lr:.2e}")
    elapsed = bar.format_dict["elapsed"]
    left = (cfg.num_epochs - epoch) * cfg.total_steps - step - 1
    eta = elapsed / done * left
    progress.info("epoch %d/%d step %d/%d  %s  lr %.3e  eta %s", epoch + 1, cfg.num_epochs,
                  step + 1, cfg.total_steps, "  ".join(f"{k} {v:.4f}" for k, v in means.items()),
                  lr, bar.format_interval(eta))


def record_epoch(trainer, epoch: int, result: dict, writer) -> None:
    """The epoch's history entry (test metrics, pseudo-label statistics, epoch mean
    training logs), tensorboard scalars, histograms and the report's figures, and
    diagnostics.json. What it reads of the algorithm is what
    :class:`finessl.algorithms.base.Algorithm` declares."""
    data, algorithm = trainer.data, trainer.algorithm
    memory = algorithm.pseudo_label_memory()
    if memory is not None:
        result.update(memory_record(memory, data.unlabeled_targets, data.num_classes))
        chosen = memory[memory >= 0]
        if chosen.numel():  # one bin per class
            edges = np.arange(data.num_classes + 1) - 0.5
            writer.add_histogram("pseudo/class", chosen.cpu().numpy(), epoch + 1, bins=edges)
    if algorithm.stats is not None:
        result["confidence"] = algorithm.stats.record()
        result["pseudo_ood_kept"] = kept_ood_share(result["confidence"])
    trainer.confusion = result.pop("confusion", None)
    if trainer.confusion is not None:
        result["per_class_precision"] = per_class_precision(trainer.confusion)
    groups = class_groups(data.labeled_counts())  # long-tailed labeled set: head / medium / tail
    if groups is not None:
        result.update(group_accuracies(result["per_class_acc"], groups))
    result["train"] = trainer.epoch_means.pop()
    for k, v in result.items():
        if isinstance(v, (int, float)):
            writer.add_scalar(f"epoch/{k}", v, epoch + 1)
    for k, v in result.get("signals", {}).items():
        writer.add_scalar(f"signals/{k}", v, epoch + 1)
    per_class = result["per_class_acc"]
    writer.add_histogram("epoch/per_class_acc", np.nan_to_num(np.array(per_class)), epoch + 1)
    result["epoch"] = epoch + 1
    trainer.history.append(result)
    if trainer.dist.is_main and trainer.run_dir:
        write(trainer.run_dir, trainer)
        to_tensorboard(writer, trainer, epoch + 1)
    best = max(trainer.history, key=lambda r: r["top1"])
    log.info("epoch %d/%d  test top-1 %.2f%%  (best %.2f%% at epoch %d)  balanced %.2f%%  "
             "ECE %.4f  pseudo-label acc %.2f%% on %.1f%% of unlabeled", epoch + 1,
             trainer.cfg.num_epochs, 100 * result["top1"], 100 * best["top1"], best["epoch"],
             100 * result["balanced_acc"], result["ece"], 100 * result.get("pseudo_acc", 0),
             100 * result.get("pseudo_rate", 0))
    if groups is not None:
        log.info("epoch %d/%d  head %.2f%%  medium %.2f%%  tail %.2f%%  (classes by labeled "
                 "images, in thirds)", epoch + 1, trainer.cfg.num_epochs,
                 *(100 * result[f"{g}_acc"] for g in ("head", "medium", "tail")))
    if "val_top1" in result:
        chosen = best_val_entry(trainer.history)
        log.info("epoch %d/%d  validation top-1 %.2f%%  (best %.2f%% at epoch %d)", epoch + 1,
                 trainer.cfg.num_epochs, 100 * result["val_top1"], 100 * chosen["val_top1"],
                 chosen["epoch"])


def best_val_entry(history: list[dict]) -> dict | None:
    """The epoch of the best validation top-1 (the first of equals), None without a
    validation split."""
    validated = [r for r in history if "val_top1" in r]
    return max(validated, key=lambda r: r["val_top1"]) if validated else None


def is_best_val(history: list[dict]) -> bool:
    """Whether the last epoch is the best on the validation split so far (its checkpoint
    is kept: checkpoint_best_val.pt)."""
    return bool(history) and best_val_entry(history) is history[-1]


def summary(history: list[dict]) -> dict:
    """The run's test top-1 (results.json) by each way of choosing the epoch, {} before
    any epoch: ``last``; ``best_val``, at the best validation epoch (with a validation
    split, DATA.NUM_VAL); ``best_test``, the best test epoch: an oracle, which chooses
    with the test labels (``best_top1`` / ``best_epoch``, its older name, kept)."""
    if not history:
        return {}
    best, last = max(history, key=lambda r: r["top1"]), history[-1]
    out = {"best_top1": best["top1"], "best_epoch": best["epoch"],
           "last_top1": last["top1"], "last_epoch": last["epoch"],
           "best_test_top1": best["top1"], "best_test_epoch": best["epoch"]}
    chosen = best_val_entry(history)
    if chosen is not None:
        out.update(best_val_top1=chosen["top1"], best_val_epoch=chosen["epoch"],
                   best_val_val_top1=chosen["val_top1"])
    # the last epoch's class-level view (long-tailed data: head / medium / tail)
    for key in ("balanced_acc", "head_acc", "medium_acc", "tail_acc", "per_class_acc",
                "per_class_precision"):
        if key in last:
            out[f"last_{key}"] = last[key]
    return out


def write(run_dir: str, trainer) -> None:
    """diagnostics.json of ``trainer`` (its history, last confusion matrix, data, algorithm)."""
    history, algorithm = trainer.history, trainer.algorithm
    record = {"format": FORMAT, "epoch": history[-1]["epoch"] if history else 0,
              "method": algorithm.method_label(),
              "classnames": list(trainer.data.classnames), "split_hash": trainer.data.split_hash,
              "aux_trained": algorithm.dls, "confusion": trainer.confusion,
              "num_val": len(trainer.data.val) if trainer.data.val is not None else 0,
              "history": history}
    atomic_write_text(json.dumps(record), os.path.join(run_dir, DIAGNOSTICS))


def to_tensorboard(writer, trainer, step: int) -> None:
    """The report's figures of the last epoch as tensorboard images (``report/...``),
    drawn by ``trainer.epoch_images`` (handed down from above: none, no images), and
    the confidences as histograms."""
    if trainer.epoch_images is not None:
        images = trainer.epoch_images(trainer.history, trainer.confusion,
                                      trainer.data.classnames, trainer.algorithm.dls)
        for tag, image in images.items():
            writer.add_image(tag, image, step, dataformats="HWC")
    confidence_histograms(writer, trainer.history[-1].get("confidence"), step)


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
