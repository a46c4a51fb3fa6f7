"""The learning-pace memory's threshold (``pace_th``, docs/differences.md): the released
code writes a pseudo-label into the pace memory from a confidence of 0.7, hard-coded,
whatever ``th`` is; ``pace_th null`` ties it to ``th``. Checked on every pseudo-labelling
algorithm against a transcription of the released lines at CIFAR-100 size."""
from __future__ import annotations

import pytest
import torch

from finessl.algorithms import ALGORITHMS, build_algorithm
from finessl.algorithms.pseudo_labeling import PseudoLabeling, pace_threshold
from finessl.config import get_cfg_defaults
from helpers import TableModel

# the rules that read more of the step than the weak logits (the labeled batch, features:
# ``PseudoLabeling.outputs``) are checked in their own tests
READS_THE_STEP = {"adamatch", "simmatch", "comatch", "acr"}
PSEUDO_LABELING = sorted(n for n, c in ALGORITHMS.items()
                         if issubclass(c, PseudoLabeling) and n not in READS_THE_STEP)
C, N_U, B = 100, 50_000, 64


def algorithm(name, **keys):
    cfg = get_cfg_defaults()
    cfg.algorithm = name
    for k, v in keys.items():
        setattr(cfg, k, v)
    return build_algorithm(cfg, TableModel(torch.zeros(1, C), torch.zeros(1, C)), C, N_U,
                           torch.device("cpu"))


def weak_logits(seed=0):
    """B weak-view logits whose confidences spread over [0.3, 1): some below 0.7, some
    between 0.7 and 0.9, some above."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, generator=g)
    top = torch.randint(C, (B,), generator=g)
    logits[torch.arange(B), top] += torch.linspace(3.5, 12.0, B)
    return logits


def released_pace_update(logits, idx, memory):
    """trainer.py's update, transcribed: ``max_probs.ge(0.7)`` selects the samples whose
    pseudo-label goes into ``selected_label``."""
    max_probs, targets = torch.softmax(logits, dim=-1).max(dim=-1)
    select = max_probs.ge(0.7)
    memory[idx[select]] = targets[select]
    return memory


def test_pace_threshold_default_is_the_released_0_7_and_null_is_th():
    cfg = get_cfg_defaults()
    assert cfg.pace_th == 0.7 and pace_threshold(cfg) == 0.7
    cfg.th, cfg.pace_th = 0.95, None
    assert pace_threshold(cfg) == 0.95


@pytest.mark.parametrize("name", PSEUDO_LABELING)
@pytest.mark.parametrize("th", [0.5, 0.95])
def test_every_algorithm_selects_for_the_pace_at_pace_th_not_th(name, th):
    logits = weak_logits()
    conf = torch.softmax(logits, dim=-1).max(dim=-1).values
    assert 8 < int((conf >= 0.7).sum()) < B - 8 and (conf >= th).sum() != (conf >= 0.7).sum()
    idx = torch.randperm(N_U, generator=torch.Generator().manual_seed(1))[:B]
    batch = {"u_idx": idx, "u_true": torch.zeros(B, dtype=torch.long)}
    released = algorithm(name, th=th).pseudo_label(logits, batch)
    assert torch.equal(released.selected, conf >= 0.7)
    memory = released_pace_update(logits, idx, torch.full((N_U,), -1))
    ours = torch.full((N_U,), -1)
    ours[idx[released.selected]] = released.targets[released.selected]
    assert torch.equal(ours, memory)
    tied = algorithm(name, th=th, pace_th=None).pseudo_label(logits, batch)
    assert torch.equal(tied.selected, conf >= th)
