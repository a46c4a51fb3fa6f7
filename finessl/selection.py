"""Label-free selection signals (docs/selection.md): what a run can say about itself
without any label, computed every epoch on a fixed subset of the unlabeled images
(DATA.NUM_SIGNAL) and written to diagnostics.json and tensorboard (``signals/...``).

Each is a plain function of the subset's logits or features:

- confidence: mean over images of max_k p_k (p = softmax of the logits);
- entropy: mean over images of -sum_k p_k log p_k (nats);
- agreement: share of images on which two predictions (main vs aux head, weak vs
  strong view) have the same argmax;
- KL to uniform / to the labeled prior: KL(q || u) and KL(q || pi) of the predicted
  class distribution q (the share of images predicted as each class) to the uniform
  distribution u and to the labeled set's class shares pi, sum_k q_k log(q_k / r_k)
  with 0 log 0 = 0;
- RankMe (Garrido et al., ICML 2023, eq. 1): exp(-sum_k p_k log p_k) with
  p_k = sigma_k / ||sigma||_1 + 1e-7, sigma the singular values of the N x D matrix of
  features (or logits);
- BNM (Cui et al., CVPR 2020, eq. 6): the nuclear norm of the N x C matrix of softmax
  predictions over N; of the features: of the L2-normalised N x D features over N.

:data:`DIRECTIONS` says which way each is better (+1 higher, -1 lower): what
``main.py select`` ranks epochs by.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RANKME_EPS = 1e-7  # RankMe's epsilon (Garrido et al., eq. 1)


def confidence(logits: torch.Tensor) -> float:
    return float(F.softmax(logits.double(), dim=-1).max(dim=-1).values.mean())


def entropy(logits: torch.Tensor) -> float:
    log_p = F.log_softmax(logits.double(), dim=-1)
    return float(-(log_p.exp() * log_p).sum(dim=-1).mean())


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(dim=-1) == b.argmax(dim=-1)).double().mean())


def predicted_distribution(logits: torch.Tensor) -> torch.Tensor:
    """q: the share of the images predicted (argmax) as each class."""
    counts = torch.bincount(logits.argmax(dim=-1), minlength=logits.shape[-1]).double()
    return counts / counts.sum()


def kl_divergence(q: torch.Tensor, r: torch.Tensor) -> float:
    """KL(q || r) = sum_k q_k log(q_k / r_k), terms with q_k = 0 counting 0."""
    q, r = q.double(), torch.as_tensor(r, dtype=torch.float64)
    seen = q > 0
    return float((q[seen] * (q[seen] / r[seen]).log()).sum())


def rankme(matrix: torch.Tensor) -> float:
    sigma = torch.linalg.svdvals(matrix.double())
    p = sigma / sigma.sum() + RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def bnm(matrix: torch.Tensor) -> float:
    """||matrix||_* / N (nuclear norm: the sum of the singular values)."""
    return float(torch.linalg.svdvals(matrix.double()).sum() / matrix.shape[0])


def head_signals(logits: torch.Tensor, prior) -> dict[str, float]:
    """The signals of one head's logits on the subset."""
    q = predicted_distribution(logits)
    uniform = torch.full_like(q, 1.0 / q.numel())
    return {"confidence": confidence(logits), "entropy": entropy(logits),
            "kl_uniform": kl_divergence(q, uniform), "kl_prior": kl_divergence(q, prior),
            "rankme": rankme(logits), "bnm": bnm(F.softmax(logits.double(), dim=-1))}


def signals(weak: torch.Tensor, strong: torch.Tensor, prior, aux: torch.Tensor | None = None,
            features: torch.Tensor | None = None) -> dict[str, float]:
    """Every signal of an epoch, flat: ``main/<name>`` of the main head's logits on the
    weak views, ``aux/<name>`` and ``agree/main_aux`` when the aux head is trained (DLS),
    ``agree/weak_strong`` (main head, weak vs strong view), ``features/rankme`` and
    ``features/bnm`` when the model gives features."""
    out = {f"main/{k}": v for k, v in head_signals(weak, prior).items()}
    if aux is not None:
        out.update({f"aux/{k}": v for k, v in head_signals(aux, prior).items()})
        out["agree/main_aux"] = agreement(weak, aux)
    out["agree/weak_strong"] = agreement(weak, strong)
    if features is not None:
        out["features/rankme"] = rankme(features)
        out["features/bnm"] = bnm(F.normalize(features.double(), dim=-1))
    return {k: v if math.isfinite(v) else 0.0 for k, v in out.items()}


# Which way each signal is better, by its name after the head: +1 higher, -1 lower.
DIRECTIONS = {"confidence": 1, "entropy": -1, "kl_uniform": -1, "kl_prior": -1, "rankme": 1,
              "bnm": 1, "main_aux": 1, "weak_strong": 1}


def direction(name: str) -> int:
    """+1 when a higher value of signal ``name`` (``main/entropy``) is better, else -1."""
    return DIRECTIONS[name.rsplit("/", 1)[-1]]
