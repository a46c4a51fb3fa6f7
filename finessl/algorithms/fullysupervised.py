"""Fully supervised: every training image with its label, L = CE(f(x), y) over the
labeled batch and the unlabeled batch's weak views with their true labels; the upper
bound of the comparison (USB's ``fullysupervised``).

USB trains it on a labeled loader over the whole training set. Here the unlabeled
set's true labels (``u_true``, otherwise read only by the diagnostics) stand in for
that loader: the split, the loaders and the number of images a step sees stay those
of every other algorithm of the same run, so the row differs from the semi-supervised
ones only in what is known of the unlabeled images. The unlabeled pool holds the
labeled images too (docs/method.md §2), so every training image of the run is used.
Images known to lie outside the label space (``u_true`` -2) are left out; an image of
unknown class (-1: an own unlabeled folder) makes the step fail in one line, since
the run then cannot be fully supervised. The strong views the loader draws go unused.

No pseudo-labels, so FineSSL's components do not apply (``bms`` / ``dls`` True fail).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import Algorithm, register
from finessl.algorithms.base import NO_PSEUDO_LABELS
from finessl.errors import UserError
from finessl.metrics import UNKNOWN


@register("fullysupervised", order=12)
class FullySupervised(Algorithm):
    refuses_components = NO_PSEUDO_LABELS

    def train_step(self, batch):
        u_true = batch["u_true"]
        if bool((u_true == UNKNOWN).any()):
            raise UserError("algorithm fullysupervised needs the true label of every unlabeled "
                            "image, and this data set's unlabeled images include some of "
                            "unknown class (-1); use a data set whose unlabeled split is labeled")
        known = u_true >= 0
        images = torch.cat([batch["x"], batch["u_w"][known]])
        labels = torch.cat([batch["y"], u_true[known]])
        loss = F.cross_entropy(self.model.classify(images), labels)
        return loss, {"loss/total": loss.detach(), "loss/x": loss.detach()}
