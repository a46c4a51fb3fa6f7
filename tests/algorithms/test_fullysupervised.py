"""finessl/algorithms/fullysupervised.py: one cross-entropy over the labeled batch and
the unlabeled images with their true labels; images of unknown class are refused."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import LinearModel, algorithm_config, image_batches, one_line_error
from finessl.algorithms import build_algorithm

C = 4


def test_the_loss_is_one_cross_entropy_over_every_known_label():
    model = LinearModel(12, C)
    ref = copy.deepcopy(model)
    algorithm = build_algorithm(algorithm_config("fullysupervised"), model, C, 5,
                                torch.device("cpu"))
    batch = image_batches(1, C)[0]
    batch["u_true"] = torch.tensor([2, -2, 0, 3, -2])  # -2: outside the label space, left out
    loss, _ = algorithm.train_step(batch)
    loss.backward()
    f = lambda v: v.flatten(1) @ ref.fc.weight.t() + ref.fc.bias  # noqa: E731
    keep = [0, 2, 3]
    expected = F.cross_entropy(torch.cat([f(batch["x"]), f(batch["u_w"][keep])]),
                               torch.cat([batch["y"], torch.tensor([2, 0, 3])]))
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    for ours, theirs in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-12, rtol=0)


def test_an_unlabeled_image_of_unknown_class_is_one_line():
    algorithm = build_algorithm(algorithm_config("fullysupervised"), LinearModel(12, C), C, 5,
                                torch.device("cpu"))
    batch = image_batches(1, C)[0]
    batch["u_true"] = torch.tensor([2, -1, 0, 3, 1])
    one_line_error(algorithm.train_step, batch, names=("fullysupervised", "(-1)"))
