"""Test-set evaluation: top-1, balanced and per-class accuracy, ECE and the confusion
matrix of the main head, and top-1, ECE and the reliability bins of both heads; beside
it, each epoch, the validation split's top-1 (DATA.NUM_VAL) and the label-free
selection signals of the unlabeled subset (DATA.NUM_SIGNAL, finessl/selection.py); and
the unlabeled set's predictions an algorithm that grows its labeled set chooses from."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl import selection
from finessl.data import build_test_loader
from finessl.distributed import SINGLE, Dist
from finessl.metrics import (confusion_matrix, expected_calibration_error, per_class_accuracy,
                             reliability_bins, top1)


@torch.no_grad()
def evaluate(model, loader, device: torch.device, precision, num_classes: int,
             dist: Dist = SINGLE, num_test: int | None = None) -> dict:
    """Predictions of the main head (docs/method.md §3: inference uses f, not f_aux),
    and of the aux head beside it for the report's calibration figures (a model
    without ``aux_head`` gets the main head's numbers there).

    Multi-process: each rank predicts its strided share (``build_test_loader``); the
    predictions are gathered, put back in test-set order and cut to ``num_test``.
    """
    was_training = model.training
    model.eval()
    columns: list[list[torch.Tensor]] = [[], [], [], [], []]  # conf, pred, aux ones, target
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        with precision.autocast():
            if hasattr(model, "aux_head"):
                logits, aux = model(images)
            else:
                logits = aux = model.classify(images)
        conf, pred = F.softmax(logits.float(), dim=-1).max(dim=-1)
        aux_conf, aux_pred = F.softmax(aux.float(), dim=-1).max(dim=-1)
        for column, t in zip(columns, (conf, pred, aux_conf, aux_pred, labels.to(device))):
            column.append(t)
    model.train(was_training)
    conf, pred, aux_conf, aux_pred, target = (_in_order(torch.cat(t), dist, num_test)
                                              for t in columns)
    per_class = per_class_accuracy(pred, target, num_classes)
    seen = ~torch.isnan(per_class)
    return {"top1": top1(pred, target), "balanced_acc": float(per_class[seen].mean()),
            "ece": expected_calibration_error(conf, pred == target),
            "top1_aux": top1(aux_pred, target),
            "ece_aux": expected_calibration_error(aux_conf, aux_pred == target),
            "per_class_acc": per_class.tolist(),
            "reliability": {"main": reliability_bins(conf, pred == target),
                            "aux": reliability_bins(aux_conf, aux_pred == target)},
            "confusion": confusion_matrix(pred, target, num_classes).tolist()}


def _in_order(local: torch.Tensor, dist: Dist, num_test: int | None) -> torch.Tensor:
    """The rows of every rank's strided share (``build_test_loader``) in dataset order."""
    if not dist.enabled:
        return local.cpu()
    rest = local.shape[1:]
    gathered = dist.gather(local).view(dist.world, -1, *rest).transpose(0, 1).reshape(-1, *rest)
    return gathered[:num_test].cpu()


@torch.no_grad()
def probabilities(model, loader, device: torch.device, precision, dist: Dist = SINGLE,
                  num_images: int | None = None) -> torch.Tensor:
    """The main head's class probabilities (float, N x C) of the images ``loader`` gives
    (image, label), in order; multi-process: each rank's strided share, gathered, so every
    rank holds all of them."""
    was_training = model.training
    model.eval()
    rows = []
    for images, _ in loader:
        images = images.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(images)[0] if hasattr(model, "aux_head") else model.classify(images)
        rows.append(F.softmax(logits.float(), dim=-1))
    model.train(was_training)
    return _in_order(torch.cat(rows), dist, num_images)


def unlabeled_predictions(trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, probabilities): the unlabeled images that are not labeled ones, and the
    main head's probabilities of their evaluation views, the model as ``trainer``
    evaluates it (``Algorithm.choose_labeled`` reads them). Every rank predicts its
    strided share and all hold the gathered whole: the same pseudo-labels everywhere,
    for 1 / world of the work."""
    data, cfg = trainer.data, trainer.cfg
    positions, dataset = data.unlabeled_only()
    if not positions:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, data.num_classes)
    loader = build_test_loader(data, max(100, cfg.DATA.BATCH_SIZE), cfg.num_workers,
                               trainer.dist.rank, trainer.dist.world, dataset)
    with trainer.algorithm.evaluation_weights():
        probs = probabilities(trainer.model, loader, trainer.device, trainer.precision,
                              trainer.dist, len(dataset))
    return torch.tensor(positions), probs


def held_out(trainer) -> dict:
    """``val_top1`` and ``val_balanced_acc`` of the validation split, and ``signals``
    (:func:`finessl.selection.signals`), of those the run has; the model as
    ``trainer`` evaluates it. Every rank computes the signals on the whole subset (the
    model is the same on all), so no collective is needed."""
    data, out = trainer.data, {}
    batch_size, workers = max(100, trainer.cfg.DATA.BATCH_SIZE), trainer.cfg.num_workers
    if data.val is not None:
        loader = build_test_loader(data, batch_size, workers, trainer.dist.rank,
                                   trainer.dist.world, data.val)
        val = evaluate(trainer.model, loader, trainer.device, trainer.precision,
                       data.num_classes, trainer.dist, len(data.val))
        out.update(val_top1=val["top1"], val_balanced_acc=val["balanced_acc"])
    if data.signal is not None:
        loader = build_test_loader(data, batch_size, workers, dataset=data.signal)
        out["signals"] = signals_of(trainer.model, loader, trainer.device, trainer.precision,
                                    data.labeled_prior, trainer.algorithm.dls)
    return out


@torch.no_grad()
def signals_of(model, loader, device: torch.device, precision, prior,
               aux_trained: bool) -> dict[str, float]:
    """The label-free signals of ``model`` on the (weak, strong) views ``loader`` gives."""
    was_training = model.training
    model.eval()
    columns: list[list[torch.Tensor]] = [[], [], [], []]  # weak, strong, aux, features
    for weak, strong in loader:
        images = torch.cat([weak, strong]).to(device, non_blocking=True)
        n = len(weak)
        with precision.autocast():
            if hasattr(model, "aux_head"):
                logits, aux, feat = model(images, features=True)
            else:
                logits, aux, feat = model.classify(images), None, None
        weak_only = (None if t is None else t[:n] for t in (aux, feat))  # of the weak views
        for column, t in zip(columns, (logits[:n], logits[n:], *weak_only)):
            if t is not None:
                column.append(t.float().cpu())
    model.train(was_training)
    weak, strong = torch.cat(columns[0]), torch.cat(columns[1])
    aux = torch.cat(columns[2]) if columns[2] and aux_trained else None
    feat = torch.cat(columns[3]) if columns[3] else None
    return selection.signals(weak, strong, prior, aux, feat)
