"""The label-free selection signals (finessl/selection.py), each against a hand
computation on a few fixed logits or features (CPU, milliseconds)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from finessl import selection

# three images, two classes; argmax: 0, 1, 0
LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0 - 1e-9]], dtype=torch.float64)


def softmax_rows(z):
    return [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in z.tolist()]


def test_confidence_and_entropy_by_hand():
    p = softmax_rows(LOGITS)
    assert selection.confidence(LOGITS) == pytest.approx(sum(max(r) for r in p) / 3, abs=1e-12)
    h = sum(-sum(v * math.log(v) for v in r) for r in p) / 3
    assert selection.entropy(LOGITS) == pytest.approx(h, abs=1e-12)


def test_agreement_counts_equal_argmaxes():
    other = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert selection.agreement(LOGITS, other) == pytest.approx(2 / 3)


def test_kl_of_the_predicted_classes_to_uniform_and_to_a_prior():
    q = [2 / 3, 1 / 3]
    to_uniform = sum(v * math.log(v / 0.5) for v in q)
    assert selection.head_signals(LOGITS, [0.5, 0.5])["kl_uniform"] == pytest.approx(to_uniform)
    prior = [0.25, 0.75]
    to_prior = sum(v * math.log(v / r) for v, r in zip(q, prior))
    assert selection.head_signals(LOGITS, prior)["kl_prior"] == pytest.approx(to_prior)
    # a class nobody predicts counts 0 (0 log 0)
    assert selection.kl_divergence(torch.tensor([1.0, 0.0]), [0.5, 0.5]) == pytest.approx(
        math.log(2))


def test_rankme_by_hand():
    z = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # singular values 3 and 1
    p = np.array([3 / 4, 1 / 4]) + 1e-7
    expected = math.exp(-(p * np.log(p)).sum())
    assert selection.rankme(torch.tensor(z)) == pytest.approx(expected, rel=1e-9)
    # one direction only: rank about 1; D orthogonal equal directions: about D
    assert selection.rankme(torch.tensor([[1.0, 0.0], [2.0, 0.0]])) == pytest.approx(1, abs=1e-5)
    assert selection.rankme(torch.eye(4, dtype=torch.float64)) == pytest.approx(4, rel=1e-5)


def test_bnm_is_the_nuclear_norm_over_the_images():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # singular values 1 and sqrt(2)
    assert selection.bnm(p) == pytest.approx((1 + math.sqrt(2)) / 3)
    signals = selection.head_signals(LOGITS, [0.5, 0.5])
    s = np.linalg.svd(np.array(softmax_rows(LOGITS)), compute_uv=False)
    assert signals["bnm"] == pytest.approx(s.sum() / 3)


def test_signals_names_heads_and_views():
    feat = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    out = selection.signals(LOGITS, LOGITS.flip(1), [0.5, 0.5], aux=LOGITS, features=feat)
    assert out["agree/main_aux"] == 1.0 and out["agree/weak_strong"] == 0.0  # every argmax flips
    assert {"main/confidence", "aux/rankme", "features/rankme", "features/bnm"} <= set(out)
    unit = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])  # the L2-normalised features
    assert out["features/bnm"] == pytest.approx(np.linalg.svd(unit, compute_uv=False).sum() / 3)
    plain = selection.signals(LOGITS, LOGITS, [0.5, 0.5])
    assert not any(k.startswith(("aux/", "features/")) or k == "agree/main_aux" for k in plain)
    assert selection.direction("main/entropy") == -1 and selection.direction("agree/main_aux") == 1
