"""CReST and CReST+ (``imb crest``, ``imb crest+``) on FixMatch: the re-sampling's
choice against a plain transcription of USB's (exact, fixed predictions), a tiny run whose
labeled set grows at each generation's start by that choice of the model's predictions,
CReST+'s alignment against a transcription of USB's ProgressiveDistAlignEMAHook in its
FixMatch step (fp64, several generations, gradients and p_model included), and exact
resume across a generation's start, from its end-of-epoch and from a mid-epoch checkpoint."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_args
from finessl.algorithms.imb.crest import kept_shares, rebalanced_picks
from finessl.config_load import load_config
from finessl.engine.trainer import Trainer
from helpers import IMB_LABELED_COUNTS as LABELED_COUNTS
from helpers import assert_imb_resume_exact, build_imb, compare_grads, fixmatch_loss, imb_batch
from helpers import leaf_params, one_line_error, weak_probs


def usb_picks(probs, counts, alpha):
    """USB's CReST.train (pseudo_label_list after a generation) and get_split (the images
    each class adds), in numpy and plain loops: {row of probs: pseudo-label}. USB's class
    index is its frequency rank: ``counts`` must fall with the class index."""
    num_classes = len(counts)
    score, pred = torch.max(torch.as_tensor(probs), dim=1)
    pseudo_label_list = []
    for c in range(num_classes):
        idx_gather = torch.where(pred == c)[0]
        idx_gather = idx_gather[torch.argsort(score[idx_gather], descending=True)]
        pseudo_label_list.append(idx_gather.numpy())
    lb_class_dist = np.array(counts) / np.array(counts).sum()
    sorted_class = np.argsort(lb_class_dist)[::-1]
    class_imb_ratio = 1. / (lb_class_dist[sorted_class][0] / lb_class_dist[sorted_class[-1]])
    mu = math.pow(class_imb_ratio, 1 / (num_classes - 1))
    picked = {}
    for c in sorted_class:
        num_picked = int(len(pseudo_label_list[c])
                         * math.pow(math.pow(mu, (num_classes - 1) - c), 1 / alpha))
        for i in pseudo_label_list[c][:num_picked]:
            picked[int(i)] = int(c)
    return picked


def fixed_predictions(n=300, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=g, dtype=torch.float64) * 2
    return torch.softmax(logits + torch.linspace(1, 0, num_classes, dtype=torch.float64), -1)


@pytest.mark.parametrize("alpha", [3.0, 1.5, 0.5])
def test_the_choice_is_usbs_on_fixed_predictions(alpha):
    counts, probs = [40, 21, 9, 4, 2], fixed_predictions()
    expected = usb_picks(probs, counts, alpha)
    rows, labels = rebalanced_picks(probs, kept_shares(counts, alpha))
    assert dict(zip(rows.tolist(), labels.tolist())) == expected
    assert 0 < len(expected) < len(probs) * 0.9  # the head classes give some up
    # the rank is the class's frequency rank: the classes reversed, the same images
    rows, labels = rebalanced_picks(probs.flip(1), kept_shares(counts[::-1], alpha))
    assert dict(zip(rows.tolist(), (4 - labels).tolist())) == expected


def test_choose_labeled_keeps_the_choice_by_position_in_place_of_the_last():
    _, _, algo = build_imb("crest", num_unlabeled=40, CREST__ALPHA=2.0)
    positions = torch.arange(0, 40, 2)  # every other unlabeled image is a candidate
    probs = fixed_predictions(20, 3, seed=1)
    algo.crest_labels.fill_(1)  # a previous generation's choice: replaced
    algo.choose_labeled(positions, probs)
    expected = usb_picks(probs, LABELED_COUNTS.tolist(), 2.0)
    where, labels = algo.added_labeled()
    assert dict(zip(where.tolist(), labels.tolist())) == {
        int(positions[row]): c for row, c in expected.items()}
    assert where.tolist() == sorted(where.tolist())  # added in position order


def test_the_labeled_set_grows_at_each_generation_by_the_models_choice(cifar_root, tmp_path):
    opts = tiny_args(cifar_root, str(tmp_path), algorithm="fixmatch", imb="crest", num_epochs=3,
                     total_steps=2, th=0.3, **{"CREST.NUM_GENS": 3, "DATA.IMB_L": 4,
                                              "DATA.NUM_U": 8, "DATA.NUM_TEST": 20,
                                              "DATA.NUM_SIGNAL": 0})
    trainer = Trainer(load_config(None, opts), str(tmp_path), seed=3)
    data, algo, model = trainer.data, trainer.algorithm, trainer.model
    counts = data.labeled_counts()
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    own = len(data.labeled_idx)
    labeled = set(data.labeled_idx)
    candidates = [p for p, i in enumerate(data.unlabeled_idx) if i not in labeled]
    chosen, choose = [], algo.choose_labeled

    def checked_choice(positions, probs):
        assert positions.tolist() == candidates
        images = torch.stack([data.unlabeled.views.test(data.unlabeled.raw.train_image(
            data.unlabeled_idx[p])) for p in candidates])
        with torch.no_grad():
            was = model.training
            model.eval()
            own_probs = F.softmax(model(images)[0].float(), -1)
            model.train(was)
        assert torch.allclose(probs, own_probs, atol=1e-5, rtol=0)
        choose(positions, probs)
        expected = {candidates[row]: c for row, c in usb_picks(probs, counts, 3.0).items()}
        where, labels = algo.added_labeled()
        assert dict(zip(where.tolist(), labels.tolist())) == expected
        assert (labels == own_probs[[candidates.index(p) for p in where.tolist()]].argmax(-1)).all()
        chosen.append(expected)
    algo.choose_labeled = checked_choice
    epochs, train_epoch = [], trainer.train_epoch

    def recorded_epoch(epoch, loaders, *args):
        served = loaders[0].dataset  # and the first added image as the loader reads it
        first = served[(own, 0)][1:] if len(served) > own else None  # (label, position)
        epochs.append((epoch, len(served), loaders[0].sampler.n, list(served.added), first))
        train_epoch(epoch, loaders, *args)
    trainer.train_epoch = recorded_epoch
    trainer.fit()
    assert len(chosen) == 2 and all(chosen)  # generations 1 and 2 start at epochs 1 and 2
    sizes = [own, own + len(chosen[0]), own + len(chosen[1])]  # the set, its sampler's n
    assert [e[:3] for e in epochs] == [(e, n, n) for e, n in enumerate(sizes)]
    for (*_, added, first), picks in zip(epochs[1:], chosen):  # what the loader serves
        assert added == [(data.unlabeled_idx[p], c) for p, c in sorted(picks.items())]
        assert first == (added[0][1], own)


def test_crest_refuses_an_algorithm_with_state_per_labeled_image():
    one_line_error(load_config, None, ["algorithm", "simmatch", "imb", "crest"],
                   names=("imb crest", "simmatch"))
    assert load_config(None, ["algorithm", "flexmatch", "imb", "crest"]).imb == "crest"


class ProgressiveDistAlign:
    """USB's hook: p_model's EMA, then alignment to the tempered labeled distribution."""

    def __init__(self, num_gens, dist_align_t):
        self.num_gens, self.dist_align_t = num_gens, dist_align_t
        counts = LABELED_COUNTS.double()
        self.p_target = counts / counts.sum()
        self.p_model = None

    def cur_t(self, gen):
        cur = gen / (self.num_gens - 1)
        return (1.0 - cur) * 1.0 + cur * self.dist_align_t

    def dist_align(self, probs, gen):
        if self.p_model is None:
            self.p_model = torch.mean(probs, dim=0)
        else:
            self.p_model = self.p_model * 0.999 + torch.mean(probs, dim=0) * (1 - 0.999)
        p_target, t = self.p_target, self.cur_t(gen)
        if t != 1:
            p_target = p_target ** t
            p_target = p_target / p_target.sum()
        aligned = probs * (p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)


def test_crest_plus_matches_a_transcription_of_usb_over_generations_gradients_included():
    cfg, model, algo = build_imb("crest+", th=0.5, CREST__NUM_GENS=3, CREST__DIST_ALIGN_T=0.3)
    reference = ProgressiveDistAlign(3, 0.3)
    named = list(model.named_parameters())
    optim = torch.optim.SGD([q for _, q in named], lr=0.5)
    plan = [0, 0, 1, 2, 2, 3]  # epochs of 4: generations 0, 0, 1, 2
    differs = False
    for step, epoch in enumerate(plan):
        if step == 0 or epoch != plan[step - 1]:
            algo.on_epoch_start(epoch)
        b = imb_batch(step)
        p = leaf_params(named)
        probs = weak_probs(p, b)
        aligned = reference.dist_align(probs, gen=epoch * 3 // 4)
        conf, targets = aligned.max(-1)
        differs |= bool((targets != probs.argmax(-1)).any())
        expected, _, _ = fixmatch_loss(p, b, cfg.th, cfg.w_con, targets=targets,
                                       mask=(conf >= cfg.th).double())
        optim.zero_grad()
        loss, _ = algo.train_step(b)
        assert abs(loss.item() - expected.item()) <= 1e-6
        loss.backward()
        compare_grads(expected, p, [q for _, q in named])
        assert torch.allclose(algo.crest_p_model, reference.p_model, atol=1e-12, rtol=0)
        optim.step()
    assert differs  # the alignment moved some pseudo-labels
    assert algo.temperature() == 0.3 and algo.method_label() == "fixmatch+crest+"


def test_crest_plus_resume_after_a_crash_in_a_generation_is_exact(cifar_root, tmp_path):
    """Resumed from the end of generation 0: the new generation's choice is made again."""
    reference = assert_imb_resume_exact("crest+", cifar_root, tmp_path,
                                        **{"CREST.NUM_GENS": 2, "DATA.IMB_L": 4})
    assert (reference.algorithm.crest_labels >= 0).any()


def test_crest_resume_after_a_preemption_in_a_generation_is_exact(cifar_root, tmp_path):
    """Resumed mid-epoch in generation 1: the labeled set is the one the checkpoint holds."""
    reference = assert_imb_resume_exact("crest", cifar_root, tmp_path, steps=2, preempt=True,
                                        **{"CREST.NUM_GENS": 2, "DATA.IMB_L": 4,
                                           "DATA.NUM_TEST": 20, "DATA.NUM_SIGNAL": 0})
    assert (reference.algorithm.crest_labels >= 0).any()
