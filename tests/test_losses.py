"""FineSSL's loss pieces and one full FineSSL step against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.losses import (add_margin, balanced_margin, learning_pace, smoothed_targets,
                            soft_cross_entropy)
from helpers import TableModel, ce, id_images


def test_learning_pace_counts_confident_pseudo_labels_per_class():
    selected = torch.tensor([0, 0, 1, -1, 0, -1])
    assert learning_pace(selected, 3).tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_learning_pace_is_zero_before_any_pseudo_label():
    assert learning_pace(torch.full((5,), -1), 4).tolist() == [0.0] * 4


def test_balanced_margins_released_and_paper_forms():
    pace = torch.tensor([1.0, 1 / 3, 0.0])  # spread = (1 - 0) * 8 = 8
    assert balanced_margin(pace, 8.0).tolist() == pytest.approx([0.0, 4.0, 8.0])
    assert balanced_margin(pace, 8.0, "paper").tolist() == pytest.approx([0.0, 16 / 3, 8.0])


def test_equal_paces_give_no_margin():
    assert balanced_margin(torch.full((3,), 0.5), 8.0).tolist() == [0.0, 0.0, 0.0]


def test_margin_goes_on_every_logit_but_the_target():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    margins = torch.tensor([0.0, 4.0, 8.0])
    out = add_margin(logits, torch.tensor([1, 2]), margins)
    assert out.tolist() == [[5.0, 2.0, 7.0], [8.0, 8.0, 0.0]]


def test_bms_cross_entropy_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    out = add_margin(logits, torch.tensor([1]), torch.tensor([0.0, 4.0, 8.0]))
    expected = -2.0 + math.log(math.exp(5) + math.exp(2) + math.exp(7))
    assert nn.functional.cross_entropy(out, torch.tensor([1])).item() == pytest.approx(expected)


def test_smoothed_targets():
    t = smoothed_targets(torch.tensor([1, 0]), 3, 0.5)
    assert t.tolist() == [[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]]
    assert smoothed_targets(torch.tensor([2]), 5, 0.0).tolist() == [[0, 0, 1, 0, 0]]


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
    loss = soft_cross_entropy(logits, torch.tensor([[0.5, 0.5]]))
    assert loss.item() == pytest.approx(-0.5 * math.log(0.25) - 0.5 * math.log(0.75))


def test_finessl_step_matches_hand_computation():
    """One step of docs/method.md §3 on 3 classes, 1 labeled and 2 unlabeled images."""
    L = math.log
    main = torch.tensor([
        [2.0, 0.0, 0.0],           # id 0: labeled image, label 0
        [L(8.0), 0.0, 0.0],        # id 1: weak view of u0 -> conf 0.8 on class 0 (masked in)
        [0.0, L(2.0), 0.0],        # id 2: weak view of u1 -> conf 0.5 on class 1 (masked out)
        [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],   # ids 3, 4: first strong views of u0, u1
        [0.5, 0.0, 0.0], [0.0, 0.0, 1.0],   # ids 5, 6: second strong views
    ])
    aux = torch.tensor([
        [0.0, 1.0, 0.0],
        [L(3.0), 0.0, 0.0],        # aux conf of u0: 3/5 = 0.6
        [0.0, 0.0, L(2.0)],        # aux conf of u1: 2/4 = 0.5
        [1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
        [0.0, 2.0, 0.0], [0.0, 1.0, 1.0],
    ])
    cfg = get_cfg_defaults()
    cfg.DATA.NUM_L = 1
    algo = build_algorithm(cfg, TableModel(main, aux), 3, 4, torch.device("cpu"))
    algo.memory.load(torch.tensor([0, 0, 1, -1]))  # pace [1, 1/2, 0] -> spread 8
    m = [0.0, (0.5 / 1.5) * 8, 8.0]
    batch = {"x": id_images([0]), "y": torch.tensor([0]), "u_w": id_images([1, 2]),
             "u_s1": id_images([3, 4]), "u_s2": id_images([5, 6]),
             "u_idx": torch.tensor([3, 1]), "u_true": torch.tensor([0, 2])}
    loss, logs = algo.train_step(batch)

    loss_x = ce([2.0, m[0], m[0]], 0)
    loss_x_aux = ce([0.0, 1.0, 0.0], 0)
    # pseudo-labels: u0 -> 0 (conf .8), u1 -> 1 (conf .5); weights = aux conf .6, .5
    strong = [([1.0, 0.0, 0.0], 0, 0.6), ([m[1], 1.0, m[1]], 1, 0.5),
              ([0.5, 0.0, 0.0], 0, 0.6), ([m[1], 0.0, 1.0 + m[1]], 1, 0.5)]
    loss_u = sum(ce(z, t) * w for z, t, w in strong) / 4
    soft0 = [0.5, 0.25, 0.25]  # smoothed target of u0's pseudo-label 0; u1 is masked out
    def soft_ce(z, p):
        lse = math.log(sum(math.exp(v) for v in z))
        return -sum(pi * (zi - lse) for zi, pi in zip(z, p))
    loss_u_aux = (soft_ce([1.0, 0.0, 0.0], soft0) + soft_ce([0.0, 2.0, 0.0], soft0)) / 2
    expected = loss_x + loss_x_aux + 3.0 * loss_u + loss_u_aux

    assert logs["loss/x"].item() == pytest.approx(loss_x, rel=1e-5)
    assert logs["loss/u"].item() == pytest.approx(loss_u, rel=1e-5)
    assert logs["loss/u_aux"].item() == pytest.approx(loss_u_aux, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["pseudo/mask_rate"].item() == 0.5
    assert logs["pseudo/acc_all"].item() == 0.5
    # memory: u0 (index 3) confidently labeled 0; u1 (index 1) unchanged
    assert algo.selected.tolist() == [0, 0, 1, 0]
    algo.on_epoch_start(1)
    assert algo.selected.tolist() == [-1, -1, -1, -1]
