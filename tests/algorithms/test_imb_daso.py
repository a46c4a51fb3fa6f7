"""DASO (``imb daso``) on FixMatch against a plain transcription of USB's
DASOFeatureQueue, DASOPseudoLabelingHook and assignment loss (fp64, several steps
across the pre-training and the distribution windows, gradients and the queue
included), and exact resume."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import IMB_C as C
from helpers import IMB_FEAT
from helpers import assert_imb_resume_exact, build_imb, compare_grads, cosine, fixmatch_loss
from helpers import imb_batch, leaf_params, linear_features, main_head


class DasoTranscription:
    """USB's queue, pseudo-label distribution and blend (q of the current batch)."""

    def __init__(self, queue_len, t_proto, t_dist, pl_dist_iter, pretrain):
        self.bank = {k: torch.empty(0, IMB_FEAT, dtype=torch.float64) for k in range(C)}
        self.prototypes = torch.zeros(C, IMB_FEAT, dtype=torch.float64)
        self.queue_len, self.t_proto, self.t_dist = queue_len, t_proto, t_dist
        self.pl_dist_iter, self.pretrain = pl_dist_iter, pretrain
        self.pl_list, self.pl_dist = [], [0] * C
        self.sim = nn.CosineSimilarity(dim=2)

    def enqueue(self, feats, labels):
        for k in range(C):
            inds = torch.where(labels == k)[0]
            if len(inds):
                self.bank[k] = torch.cat([self.bank[k], feats[inds]], 0)[-self.queue_len:]
                self.prototypes[k] = self.bank[k].mean(0)

    def step(self, it, p, b, th, w_con, ratio):
        f = linear_features(p)
        with torch.no_grad():
            self.enqueue(f(b["x"]), b["y"])
            probs = torch.softmax(cosine(f(b["u_w"]), main_head(p)), -1)
            q = (self.sim(f(b["u_w"]).unsqueeze(1), self.prototypes.unsqueeze(0)) / self.t_proto).softmax(1)
            label = probs.argmax(-1)
            if it >= self.pretrain:
                if sum(self.pl_dist) == 0:  # see daso.py: the counts so far
                    counts = torch.cat(self.pl_list) if self.pl_list else label
                    dist = torch.bincount(counts, minlength=C).double()
                else:
                    dist = torch.tensor(self.pl_dist, dtype=torch.float64)
                dist = dist / dist.sum()
                dist = dist ** (1. / self.t_dist)
                dist = dist / dist.sum()
                dist = dist / dist.max()
                w = dist[label].view(-1, 1)
                label = ((1. - w) * probs + w * q).argmax(-1)
            self.pl_list.append(label)
        loss, _, _ = fixmatch_loss(p, b, th, w_con, targets=label)
        if it + 1 >= self.pretrain:
            assign = [-(q * F.log_softmax(self.sim(f(b[v]).unsqueeze(1), self.prototypes.unsqueeze(0))
                                          / self.t_proto, -1)).sum(1).mean() for v in ("u_s1", "u_s2")]
            loss = loss + ratio * sum(assign) / 2
        if (it + 1) % self.pl_dist_iter == 0:
            total = torch.cat(self.pl_list)
            self.pl_dist = [int((total == k).sum()) for k in range(C)]
            self.pl_list = []
        return loss, label


def test_daso_matches_a_transcription_of_usb_over_steps_gradients_included():
    keys = dict(DASO__QUEUE_LEN=3, DASO__T_PROTO=0.5, DASO__T_DIST=1.5, DASO__PL_DIST_ITER=2,
                DASO__NUM_PRETRAIN_ITER=2, DASO__ASSIGN_LOSS_RATIO=0.7)
    cfg, model, algo = build_imb("daso", th=0.5, **keys)
    reference = DasoTranscription(3, 0.5, 1.5, 2, 2)
    named = list(model.named_parameters())
    optim = torch.optim.SGD([q for _, q in named], lr=0.5)
    blended = False
    for it in range(7):
        b = imb_batch(it)
        p = leaf_params(named)
        expected, label = reference.step(it, p, b, cfg.th, cfg.w_con, 0.7)
        with torch.no_grad():
            blended |= bool((label != cosine(linear_features(p)(b["u_w"]), main_head(p)).argmax(-1)).any())
        optim.zero_grad()
        loss, logs = algo.train_step(b)
        assert abs(loss.item() - expected.item()) <= 1e-6
        assert ("loss/assign" in logs) == (it + 1 >= 2)
        loss.backward()
        compare_grads(expected, p, [q for _, q in named])
        assert torch.allclose(algo.prototypes(), reference.prototypes, atol=1e-12, rtol=0)
        assert algo.daso_pl_dist.tolist() == reference.pl_dist
        optim.step()
    assert blended and algo.daso_queued.tolist() == [3, 3, 3]  # full queues, semantic labels


def test_daso_resume_after_a_crash_mid_epoch_is_exact(cifar_root, tmp_path):
    assert_imb_resume_exact("daso", cifar_root, tmp_path, **{"DASO.NUM_PRETRAIN_ITER": 3,
                                                               "DASO.PL_DIST_ITER": 2,
                                                               "DASO.QUEUE_LEN": 4})
