"""CReST+ (``imb crest+``) on FixMatch against a plain transcription of USB's
ProgressiveDistAlignEMAHook in its FixMatch step (fp64, several generations,
gradients and p_model included), and exact resume."""
from __future__ import annotations

import torch

from helpers import IMB_LABELED_COUNTS as LABELED_COUNTS
from helpers import assert_imb_resume_exact, build_imb, compare_grads, fixmatch_loss, imb_batch
from helpers import leaf_params, weak_probs


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


def test_crest_plus_resume_after_a_crash_mid_epoch_is_exact(cifar_root, tmp_path):
    assert_imb_resume_exact("crest+", cifar_root, tmp_path, **{"CREST.NUM_GENS": 2})
