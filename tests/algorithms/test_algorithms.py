"""Each baseline's pseudo-labelling rule against hand-computed values (docs/method.md §5),
exact resume of its state, and FineSSL's components on top of FlexMatch."""
from __future__ import annotations

import math

import pytest
import torch

from finessl.algorithms import ALGORITHMS, Algorithm, build_algorithm
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.config import get_cfg_defaults
from helpers import TableModel, ce, id_images

L = math.log
CPU = torch.device("cpu")
PSEUDO_LABELING = sorted(n for n, c in ALGORITHMS.items() if issubclass(c, PseudoLabeling))
# those that run on a TableModel: no heads of their own on the backbone's features (the
# others' state is checked in their own tests and by the end-to-end resume)
ON_TABLES = [n for n in PSEUDO_LABELING if ALGORITHMS.get(n).extra_modules is Algorithm.extra_modules]


def _build(name, main=None, aux=None, num_classes=3, num_unlabeled=4, **keys):
    """An algorithm on a TableModel; ``keys`` set config keys, dots as '__'."""
    cfg = get_cfg_defaults()
    cfg.algorithm = name
    for key, value in keys.items():
        node, *path = key.split("__")
        if path:
            setattr(getattr(cfg, node), path[0], value)
        else:
            setattr(cfg, node, value)
    main = torch.zeros(1, num_classes) if main is None else main
    aux = torch.zeros_like(main) if aux is None else aux
    # the labeled set's class counts, for the algorithms that read them (ACR)
    return build_algorithm(cfg, TableModel(main, aux), num_classes, num_unlabeled, CPU,
                           labeled_counts=torch.arange(num_classes, 0, -1))


def _log_probs(rows):
    return torch.tensor([[L(p) for p in row] for row in rows])


def _batch(x, y, u_w, u_s1, u_s2, u_idx, u_true):
    return {"x": id_images(x), "y": torch.tensor(y), "u_w": id_images(u_w),
            "u_s1": id_images(u_s1), "u_s2": id_images(u_s2),
            "u_idx": torch.tensor(u_idx), "u_true": torch.tensor(u_true),
            "x_s": id_images(x), "u_m": id_images(u_s1)}  # the views DeFixMatch, SequenceMatch add


# ---- FixMatch and Pseudo-Label ------------------------------------------------------
def test_fixmatch_masks_by_confidence_on_both_strong_views():
    main = torch.tensor([
        [2.0, 0.0, 0.0],                  # id 0: labeled, label 0
        [L(8.0), 0.0, 0.0],               # id 1: weak u0 -> conf .8 on class 0 (kept)
        [0.0, L(2.0), 0.0],               # id 2: weak u1 -> conf .5 on class 1 (dropped)
        [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],  # ids 3, 4: first strong views
        [0.5, 0.0, 0.0], [0.0, 0.0, 1.0],  # ids 5, 6: second strong views
    ])
    algo = _build("fixmatch", main)
    loss, logs = algo.train_step(_batch([0], [0], [1, 2], [3, 4], [5, 6], [0, 1], [0, 2]))
    loss_u = (ce([1.0, 0.0, 0.0], 0) + ce([0.5, 0.0, 0.0], 0)) / 4
    assert logs["pseudo/mask_rate"].item() == 0.5
    assert logs["loss/u"].item() == pytest.approx(loss_u, rel=1e-5)
    assert loss.item() == pytest.approx(ce([2.0, 0.0, 0.0], 0) + 3.0 * loss_u, rel=1e-5)


def test_pseudolabel_learns_the_weak_views_own_hard_labels():
    main = torch.tensor([[2.0, 0.0, 0.0], [L(8.0), 0.0, 0.0], [0.0, L(2.0), 0.0],
                         [0.0, 0.0, 9.0], [0.0, 0.0, 9.0]])  # strong views: never used
    algo = _build("pseudolabel", main)
    loss, logs = algo.train_step(_batch([0], [0], [1, 2], [3, 3], [4, 4], [0, 1], [0, 1]))
    loss_u = ce([L(8.0), 0.0, 0.0], 0) / 2  # u0 kept (conf .8), u1 dropped (conf .5)
    assert logs["pseudo/mask_rate"].item() == 0.5
    assert logs["loss/u"].item() == pytest.approx(loss_u, rel=1e-5)
    assert loss.item() == pytest.approx(ce([2.0, 0.0, 0.0], 0) + 3.0 * loss_u, rel=1e-5)


# ---- FlexMatch ----------------------------------------------------------------------
def _flex(memory, warmup):
    algo = _build("flexmatch", num_unlabeled=len(memory), FLEXMATCH__WARMUP=warmup)
    algo.label_memory.load(torch.tensor(memory))
    return algo


@pytest.mark.parametrize("warmup", [True, False])
def test_flexmatch_thresholds_with_two_unused(warmup):
    # sigma = [3, 1, 0], 2 unused: both normalisers are max(3, 2) = 3 -> beta = [1, 1/3, 0]
    # M(beta) = beta / (2 - beta) = [1, (1/3) / (5/3), 0] = [1, 1/5, 0]
    algo = _flex([0, 0, 1, -1, 0, -1], warmup)
    assert algo.thresholds().tolist() == pytest.approx([0.7, 0.14, 0.0])


def test_flexmatch_warmup_normalises_by_the_unused_count():
    memory = [0, 0, 1, -1, 0, -1, -1, -1]  # sigma = [3, 1, 0], 4 unused
    # warm-up: beta = [3, 1, 0] / max(3, 4) = [.75, .25, 0]
    #          M = [.75 / 1.25, .25 / 1.75, 0] = [.6, 1/7, 0]
    assert _flex(memory, True).thresholds().tolist() == pytest.approx([0.42, 0.1, 0.0])
    # no warm-up: beta = [1, 1/3, 0] -> M = [1, 1/5, 0]
    assert _flex(memory, False).thresholds().tolist() == pytest.approx([0.7, 0.14, 0.0])


def test_flexmatch_empty_memory_keeps_every_pseudo_label():
    algo = _flex([-1] * 4, True)
    assert algo.thresholds().tolist() == [0.0, 0.0, 0.0]
    pl = algo.pseudo_label(_log_probs([[0.4, 0.3, 0.3]]), {"u_idx": torch.tensor([2])})
    assert pl.weight.tolist() == [1.0] and pl.selected.tolist() == [False]
    assert algo.selected_label.tolist() == [-1] * 4  # conf .4 < tau: not memorised


@pytest.mark.parametrize("warmup, mask", [(True, [1.0, 1.0, 1.0, 1.0]),
                                          (False, [1.0, 0.0, 1.0, 1.0])])
def test_flexmatch_mask_then_memory_update(warmup, mask):
    memory = [0, 0, 1, -1, 0, -1, -1, -1]  # thresholds [.42, 1/7, 0] / [.7, .14, 0]
    algo = _flex(memory, warmup)
    logits = _log_probs([[0.8, 0.1, 0.1],     # class 0 conf .8: kept, memorised
                         [0.6, 0.3, 0.1],     # class 0 conf .6: kept only with warm-up
                         [0.3, 0.4, 0.3],     # class 1 conf .4 >= .14
                         [0.25, 0.25, 0.5]])  # class 2 conf .5 >= 0
    pl = algo.pseudo_label(logits, {"u_idx": torch.tensor([3, 5, 1, 7])})
    assert pl.targets.tolist() == [0, 0, 1, 2]
    assert pl.weight.tolist() == mask
    assert pl.selected.tolist() == [True, False, False, False]
    # only conf >= .7 is written; the mask above used the memory from before this batch
    assert algo.selected_label.tolist() == [0, 0, 1, 0, 0, -1, -1, -1]


def test_flexmatch_memory_survives_epochs_unlike_the_learning_pace():
    algo = _flex([0, 1, -1, 2], True)
    algo.memory.load(torch.tensor([0, 1, -1, 2]))
    algo.on_epoch_start(1)
    assert algo.selected.tolist() == [-1] * 4
    assert algo.selected_label.tolist() == [0, 1, -1, 2]


# ---- FreeMatch ----------------------------------------------------------------------
def test_freematch_self_adaptive_thresholds_over_three_updates():
    """m = .5, C = 3: tau, p and h start at 1/3; each batch updates them, then masks."""
    algo = _build("freematch", FREEMATCH__EMA=0.5)
    batches = [[[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]],
               [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]],
               [[0.2, 0.45, 0.35], [0.5, 0.25, 0.25]]]
    masks = [[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
    tau, p, h = 1 / 3, [1 / 3] * 3, [1 / 3] * 3
    for rows, mask in zip(batches, masks):
        conf = [max(r) for r in rows]
        cls = [r.index(max(r)) for r in rows]
        tau = 0.5 * tau + 0.5 * sum(conf) / 2
        p = [0.5 * p[c] + 0.5 * (rows[0][c] + rows[1][c]) / 2 for c in range(3)]
        h = [0.5 * h[c] + 0.5 * cls.count(c) / 2 for c in range(3)]
        thresholds = [tau * pc / max(p) for pc in p]
        pl = algo.pseudo_label(_log_probs(rows), {"u_idx": torch.tensor([0, 1])})
        assert algo.class_thresholds().tolist() == pytest.approx(thresholds, rel=1e-5)
        assert pl.weight.tolist() == mask
        assert pl.weight.tolist() == [float(conf[i] >= thresholds[cls[i]]) for i in range(2)]
    # the same numbers written out:
    # tau: 1/3 -> 1/6 + .6/2 = 7/15 -> 7/30 + .75/2 = 73/120 -> 73/240 + .475/2 = 13/24
    # p: [47, 41, 32]/120 -> [.570833, .258333, .170833] -> [.460417, .304167, .235417]
    # h: [5, 5, 2]/12 -> [17, 5, 2]/24 -> [29, 17, 2]/48
    assert algo.time_p.item() == pytest.approx(13 / 24, rel=1e-6)
    assert algo.p_model.tolist() == pytest.approx([0.4604167, 0.3041667, 0.2354167], rel=1e-5)
    assert algo.label_hist.tolist() == pytest.approx([29 / 48, 17 / 48, 2 / 48], rel=1e-5)
    # batch 3: thresholds 13/24 * [1, .304167/.460417, .235417/.460417]
    #        = [.541667, .357843, .276961]; u0 = class 1 conf .45 kept, u1 = class 0 conf .5 not


def test_freematch_fairness_loss_by_hand():
    algo = _build("freematch")
    algo.p_model.copy_(torch.tensor([0.5, 0.3, 0.2]))
    algo.label_hist.copy_(torch.tensor([0.5, 0.25, 0.25]))
    # two samples, both strong views stacked; only sample 0 is masked in
    logits_u = torch.cat([_log_probs([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]),
                          _log_probs([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])]).requires_grad_()
    pl = PseudoLabels(torch.tensor([0, 2]), torch.tensor([1.0, 0.0]),
                      torch.tensor([False, False]))
    loss = algo.extra_losses(logits_u, pl)["fairness"]
    # SumNorm(p / h) = SumNorm([1, 1.2, .8]) = [1/3, .4, 4/15]
    # masked views: [.6, .3, .1] (argmax 0) and [.2, .5, .3] (argmax 1)
    #   pbar = [.4, .4, .2], hbar = [.5, .5, 0] -> pbar / hbar = [.8, .8, 0 (1/0 := 0)]
    #   SumNorm -> [.5, .5, 0]
    expected = 0.01 * ((1 / 3) * L(0.5 + 1e-12) + 0.4 * L(0.5 + 1e-12) + (4 / 15) * L(1e-12))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logits_u.grad[[1, 3]].abs().sum() == 0  # unmasked samples get no gradient
    assert logits_u.grad[[0, 2]].abs().sum() > 0


def test_freematch_fairness_is_zero_when_nothing_is_masked_and_joins_the_loss():
    main = torch.tensor([[2.0, 0.0, 0.0], [L(8.0), 0.0, 0.0], [0.0, L(9.0), 0.0],
                         [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    algo = _build("freematch", main)
    none = PseudoLabels(torch.tensor([0, 1]), torch.zeros(2), torch.zeros(2, dtype=torch.bool))
    assert algo.extra_losses(torch.randn(4, 3), none)["fairness"].item() == 0.0
    loss, logs = algo.train_step(_batch([0], [0], [1, 2], [3, 4], [4, 3], [0, 1], [0, 1]))
    assert logs["pseudo/mask_rate"].item() == 1.0
    assert logs["loss/fairness"].item() != 0.0
    total = logs["loss/x"] + 3.0 * logs["loss/u"] + logs["loss/fairness"]
    assert loss.item() == pytest.approx(total.item(), rel=1e-6)


# ---- SoftMatch ----------------------------------------------------------------------
def test_softmatch_truncated_gaussian_weights_from_given_mean_and_variance():
    algo = _build("softmatch", SOFTMATCH__ALIGN=False, SOFTMATCH__EMA=1.0)  # m = 1 freezes
    algo.mu.fill_(0.6)
    algo.var.fill_(0.01)
    pl = algo.pseudo_label(_log_probs([[0.9, 0.05, 0.05], [0.6, 0.2, 0.2],
                                       [0.25, 0.5, 0.25], [0.3, 0.3, 0.4]]),
                           {"u_idx": torch.arange(4)})
    # weight = exp(-(min(c - .6, 0))^2 / (2 * .01 / 2^2)) = exp(-(c - .6)^2 / .005) below .6
    expected = [1.0, 1.0, math.exp(-0.01 / 0.005), math.exp(-0.04 / 0.005)]
    assert pl.weight.tolist() == pytest.approx(expected, rel=1e-4)
    assert pl.targets.tolist() == [0, 0, 1, 2]
    assert pl.selected.tolist() == [True, False, False, False]


def test_softmatch_uniform_alignment_and_ema_updates():
    q = [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]
    # first batch: p_model = its mean = [.4, .4, .2]
    # UA(q) = SumNorm(q / 3 / p_model): [1.5, .75, .5] / 2.75 and [.5, 1.25, 1.5] / 3.25
    aligned = [[6 / 11, 3 / 11, 2 / 11], [2 / 13, 5 / 13, 6 / 13]]
    out = _build("softmatch").uniform_alignment(torch.tensor(q)).tolist()
    assert out[0] == pytest.approx(aligned[0]) and out[1] == pytest.approx(aligned[1])

    algo = _build("softmatch", SOFTMATCH__EMA=0.1)
    pl = algo.pseudo_label(_log_probs(q), {"u_idx": torch.tensor([0, 1])})
    assert algo.p_model.tolist() == pytest.approx([0.4, 0.4, 0.2], rel=1e-5)
    assert bool(algo.p_model_set)
    # the hard label stays argmax q (1 for u1, although UA's argmax is 2)
    assert pl.targets.tolist() == [0, 1]
    c = [6 / 11, 6 / 13]  # max UA(q)
    mu = 0.1 / 3 + 0.9 * (c[0] + c[1]) / 2             # = .486486
    var = 0.1 * 1.0 + 0.9 * (c[0] - c[1]) ** 2 / 2     # unbiased variance of two values
    assert algo.mu.item() == pytest.approx(mu, rel=1e-5)
    assert algo.var.item() == pytest.approx(var, rel=1e-5)
    # u0 above the mean: weight 1; u1 (6/13 = .461538) below it
    expected = [1.0, math.exp(-(c[1] - mu) ** 2 / (2 * var / 2.0 ** 2))]
    assert pl.weight.tolist() == pytest.approx(expected, rel=1e-5)
    assert expected[1] < 1.0
    # second batch: p_model is an EMA now; one sample has no variance
    algo.pseudo_label(_log_probs([[0.2, 0.2, 0.6]]), {"u_idx": torch.tensor([2])})
    assert algo.p_model.tolist() == pytest.approx([0.22, 0.22, 0.56], rel=1e-5)
    assert algo.var.item() == pytest.approx(var, rel=1e-6)


# ---- DebiasPL -----------------------------------------------------------------------
def test_debiaspl_debiased_pseudo_labels_and_adaptive_margin_loss():
    main = torch.tensor([
        [2.0, 0.0, 0.0],               # id 0: labeled, label 0
        [L(0.5), L(0.45), L(0.05)],    # id 1: weak u0, raw argmax 0
        [L(0.1), L(0.1), L(0.8)],      # id 2: weak u1, raw argmax 2
        [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],  # ids 3, 4: first strong views
        [0.5, 0.5, 0.0], [0.0, 0.0, 1.0],  # ids 5, 6: second strong views
    ])
    algo = _build("debiaspl", main, DEBIASPL__EMA=0.5)
    algo.p_hat.copy_(torch.tensor([0.9, 0.05, 0.05]))
    loss, logs = algo.train_step(_batch([0], [0], [1, 2], [3, 4], [5, 6], [0, 1], [1, 2]))
    # debiased q ~ p / sqrt(p_hat):
    #   u0: [.5/.948683, .45/.223607, .05/.223607] = [.527046, 2.012461, .223607]
    #       -> class 1 (flipped from 0), conf 2.012461 / 2.763114 = .728328 >= .7
    #   u1: [.1/.948683, .1/.223607, .8/.223607] -> class 2, conf 3.577709 / 4.130328 = .866
    assert logs["pseudo/mask_rate"].item() == 1.0
    assert logs["pseudo/acc_all"].item() == 1.0  # u0's true class is 1
    # p_hat <- .5 [.9, .05, .05] + .5 mean([.5, .45, .05], [.1, .1, .8]) = [.6, .1625, .2375]
    p_hat = [0.6, 0.1625, 0.2375]
    assert algo.p_hat.tolist() == pytest.approx(p_hat, rel=1e-5)
    margin = [0.5 * L(p) for p in p_hat]

    def shifted(z):
        return [zi + mi for zi, mi in zip(z, margin)]
    loss_u = (ce(shifted([1.0, 0.0, 0.0]), 1) + ce(shifted([0.0, 1.0, 0.0]), 2)
              + ce(shifted([0.5, 0.5, 0.0]), 1) + ce(shifted([0.0, 0.0, 1.0]), 2)) / 4
    assert logs["loss/u"].item() == pytest.approx(loss_u, rel=1e-5)
    assert loss.item() == pytest.approx(ce([2.0, 0.0, 0.0], 0) + 3.0 * loss_u, rel=1e-5)


def test_debiaspl_keeps_raw_label_without_bias():
    algo = _build("debiaspl")  # p_hat uniform: debiasing shifts every logit equally
    pl = algo.pseudo_label(_log_probs([[0.5, 0.45, 0.05]]), {"u_idx": torch.tensor([0])})
    assert pl.targets.tolist() == [0] and pl.weight.tolist() == [0.0]


# ---- state and composition ----------------------------------------------------------
def _random_run(name, seed, steps):
    """An algorithm on random logits (ids: 0 labeled, 1-8 weak, 9-16 strong views) and
    ``steps`` batches of 4 of the 8 unlabeled images."""
    gen = torch.Generator().manual_seed(seed)
    algo = _build(name, torch.randn(17, 3, generator=gen) * 3, torch.randn(17, 3, generator=gen),
                  num_unlabeled=8, FREEMATCH__EMA=0.5, SOFTMATCH__EMA=0.5, DEBIASPL__EMA=0.5)
    batches = []
    for _ in range(steps):
        idx = torch.randperm(8, generator=gen)[:4]
        weak = (idx + 1).tolist()
        batches.append(_batch([0], [1], weak, [i + 8 for i in weak], [i + 8 for i in weak[::-1]],
                              idx.tolist(), [0, 1, 2, 0]))
    return algo, batches


def _tensors(state: dict) -> dict:
    """An algorithm's state, the weights of its own heads (``modules``) by name."""
    modules = {f"modules.{k}": v for k, v in state.get("modules", {}).items()}
    return {**{k: v for k, v in state.items() if k != "modules"}, **modules}


@pytest.mark.parametrize("name", ON_TABLES)
def test_state_dict_round_trip_restores_every_tensor(name):
    algo, batches = _random_run(name, seed=0, steps=3)
    initial = _tensors(algo.state_dict())
    for batch in batches[:2]:
        algo.train_step(batch)
    state = _tensors(algo.state_dict())
    assert any(not torch.equal(state[k], initial[k]) for k in state), "no state moved"
    fresh, _ = _random_run(name, seed=0, steps=0)
    fresh.load_state_dict(algo.state_dict())
    restored = _tensors(fresh.state_dict())
    assert restored.keys() == state.keys()
    for key, value in state.items():
        assert isinstance(value, torch.Tensor) and value.device == CPU, key
        assert torch.equal(restored[key], value), key
    # resuming is exact: the next step gives the same loss and the same state
    loss_a, _ = algo.train_step(batches[2])
    loss_b, _ = fresh.train_step(batches[2])
    assert loss_a.item() == loss_b.item()
    after = _tensors(fresh.state_dict())
    for key, value in _tensors(algo.state_dict()).items():
        assert torch.equal(after[key], value), key


def test_state_dict_is_a_copy():
    algo = _build("debiaspl")
    state = algo.state_dict()
    algo.p_hat.fill_(0.5)
    assert state["p_hat"].tolist() == pytest.approx([1 / 3] * 3)


def test_flexmatch_with_balanced_margins_and_decoupled_smoothing():
    """The FineSSL step of test_losses, with FlexMatch's thresholds for the rule."""
    main = torch.tensor([
        [2.0, 0.0, 0.0],                   # id 0: labeled image, label 1
        [L(8.0), 0.0, 0.0],                # id 1: weak u0 -> conf .8 on class 0
        [0.0, L(2.0), 0.0],                # id 2: weak u1 -> conf .5 on class 1
        [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
        [0.5, 0.0, 0.0], [0.0, 0.0, 1.0],
    ])
    aux = torch.tensor([
        [0.0, 1.0, 0.0],
        [L(3.0), 0.0, 0.0],                # aux conf of u0: .6
        [0.0, 0.0, L(2.0)],                # aux conf of u1: .5
        [1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
        [0.0, 2.0, 0.0], [0.0, 1.0, 1.0],
    ])
    algo = _build("flexmatch", main, aux, bms=True, dls=True)
    algo.memory.load(torch.tensor([0, 0, 1, -1]))        # pace [1, 1/2, 0] -> spread 8
    algo.label_memory.load(torch.tensor([0, 1, -1, -1]))  # sigma [1, 1, 0], 2 unused
    # FlexMatch thresholds: beta = [1, 1, 0] / 2 -> .7 * [1/3, 1/3, 0]: u1 (conf .5) kept
    m = [0.0, (0.5 / 1.5) * 8, 8.0]
    loss, logs = algo.train_step(_batch([0], [1], [1, 2], [3, 4], [5, 6], [3, 1], [0, 2]))

    loss_x = ce([2.0 + m[1], 0.0, 0.0 + m[1]], 1)
    loss_x_aux = ce([0.0, 1.0, 0.0], 1)
    strong = [([1.0, 0.0, 0.0], 0, 0.6), ([m[1], 1.0, m[1]], 1, 0.5),
              ([0.5, 0.0, 0.0], 0, 0.6), ([m[1], 0.0, 1.0 + m[1]], 1, 0.5)]
    loss_u = sum(ce(z, t) * w for z, t, w in strong) / 4

    def soft_ce(z, p):
        lse = L(sum(math.exp(v) for v in z))
        return -sum(pi * (zi - lse) for zi, pi in zip(z, p))
    soft0, soft1 = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25]
    loss_u_aux = (soft_ce([1.0, 0.0, 0.0], soft0) + soft_ce([0.0, 0.0, 0.0], soft1)
                  + soft_ce([0.0, 2.0, 0.0], soft0) + soft_ce([0.0, 1.0, 1.0], soft1)) / 4
    assert logs["loss/x"].item() == pytest.approx(loss_x, rel=1e-5)
    assert logs["loss/x_aux"].item() == pytest.approx(loss_x_aux, rel=1e-5)
    assert logs["loss/u"].item() == pytest.approx(loss_u, rel=1e-5)
    assert logs["loss/u_aux"].item() == pytest.approx(loss_u_aux, rel=1e-5)
    expected = loss_x + loss_x_aux + 3.0 * loss_u + loss_u_aux
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["pseudo/mask_rate"].item() == 1.0
    assert logs["pseudo/margin_max"].item() == pytest.approx(8.0)
    # both memories learn u0 (index 3, conf .8): the pace one and FlexMatch's own
    assert algo.selected.tolist() == [0, 0, 1, 0]
    assert algo.selected_label.tolist() == [0, 1, -1, 0]
