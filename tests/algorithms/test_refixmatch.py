"""ReFixMatch against a plain transcription of USB's ``refixmatch.py`` train step and
its ``consistency_loss(..., 'kl')``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import random_batch, side_by_side, side_by_side_setup



def _setup(**keys):
    return side_by_side_setup("refixmatch", **keys)


def usb_step(th, lambda_u, w_low):
    """USB's ReFixMatch step (hard labels, fixed threshold, T = 0.5 in the KL term),
    its lambda_u split into L_u's and L_low's weights, each unlabeled term averaged over
    our two strong views."""
    def step(model, batch):
        logits = lambda v: model(v)[0]  # noqa: E731
        sup = F.cross_entropy(logits(batch["x"]), batch["y"])
        with torch.no_grad():
            probs_w = torch.softmax(logits(batch["u_w"]), dim=-1)
        mask = (probs_w.max(dim=-1).values >= th).double()
        unsup, refix = 0.0, 0.0
        for key in ("u_s1", "u_s2"):
            z_s = logits(batch[key])
            unsup = unsup + (F.cross_entropy(z_s, probs_w.argmax(dim=-1), reduction="none")
                             * mask).mean() / 2
            kl = F.kl_div(F.log_softmax(z_s / 0.5, dim=-1), F.softmax(probs_w / 0.5, dim=-1),
                          reduction="none")
            refix = refix + torch.sum(kl * (1.0 - mask).unsqueeze(-1), dim=1).mean() / 2
        return sup + lambda_u * unsup + w_low * refix, {"mask": mask, "refix": refix}
    return step


def test_refixmatch_matches_usb_over_steps_with_gradients():
    cfg, algo, ref_model = _setup()
    gen = torch.Generator().manual_seed(0)
    batches = [random_batch(gen) for _ in range(4)]
    masks = []
    step = usb_step(cfg.th, cfg.w_con, cfg.REFIXMATCH.W_LOW)
    for logs, info in side_by_side(algo, ref_model, step, batches):
        assert abs(logs["pseudo/mask_rate"].item() - info["mask"].mean().item()) < 1e-6
        assert abs(logs["loss/low_conf"].item() - cfg.REFIXMATCH.W_LOW * info["refix"].item()) < 1e-12
        masks.append(info["mask"])
    assert 0 < torch.cat(masks).mean() < 1  # both terms were exercised


def test_refixmatch_temperature_and_bms_dls():
    cfg, algo, _ = _setup(bms=True, dls=True)
    cfg.REFIXMATCH.T = 1.0
    assert algo.method_label() == "refixmatch+bms+dls"
    loss, logs = algo.train_step(random_batch(torch.Generator().manual_seed(1)))
    assert {"loss/x_aux", "loss/u_aux", "loss/low_conf"} <= set(logs) and torch.isfinite(loss)
    out = algo.outputs
    target = torch.softmax(torch.softmax(out.logits_w, dim=-1), dim=-1).repeat(2, 1)
    kl = (target * (target.log() - torch.log_softmax(out.logits_u, dim=-1))).sum(dim=-1)
    low = (torch.softmax(out.logits_w, dim=-1).max(dim=-1).values < cfg.th).double().repeat(2)
    assert abs(logs["loss/low_conf"].item() - cfg.REFIXMATCH.W_LOW * (kl * low).mean().item()) < 1e-12
