"""DeFixMatch against a plain transcription of USB's ``defixmatch.py`` train step."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import random_batch, side_by_side, side_by_side_setup



def _setup(**keys):
    return side_by_side_setup("defixmatch", **keys)


def _batches(steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        batch = random_batch(gen)
        batch["x_s"] = torch.randn(batch["x"].shape, generator=gen, dtype=torch.float64)
        out.append(batch)
    return out


def usb_step(th, lambda_u):
    """USB's DeFixMatch step (hard labels, fixed threshold), with our two strong
    unlabeled views averaged in the unlabeled loss."""
    def step(model, batch):
        logits = lambda v: model(v)[0]  # noqa: E731
        x_lb, x_lb_s, y = logits(batch["x"]), logits(batch["x_s"]), batch["y"]
        with torch.no_grad():
            x_ulb_w = logits(batch["u_w"])
        sup = 0.5 * (F.cross_entropy(x_lb, y) + F.cross_entropy(x_lb_s, y))
        probs_w = torch.softmax(x_ulb_w.detach(), dim=-1)
        probs_lb = torch.softmax(x_lb.detach(), dim=-1)
        mask = (probs_w.max(dim=-1).values >= th).double()
        mask_lb = (probs_lb.max(dim=-1).values >= th).double()
        unsup = sum((F.cross_entropy(logits(batch[k]), probs_w.argmax(dim=-1), reduction="none")
                     * mask).mean() for k in ("u_s1", "u_s2")) / 2
        anti = (F.cross_entropy(x_lb_s, probs_lb.argmax(dim=-1), reduction="none") * mask_lb).mean()
        return sup + lambda_u * (unsup - anti), {"mask": mask, "mask_lb": mask_lb, "anti": anti}
    return step


def test_defixmatch_matches_usb_over_steps_with_gradients():
    cfg, algo, ref_model = _setup()
    masks = []
    for logs, info in side_by_side(algo, ref_model, usb_step(cfg.th, cfg.w_con), _batches(4)):
        assert abs(logs["pseudo/mask_rate"].item() - info["mask"].mean().item()) < 1e-6
        assert abs(logs["loss/debias"].item() + cfg.w_con * info["anti"].item()) < 1e-12
        masks += [info["mask"], info["mask_lb"]]
    masks = torch.cat(masks)
    assert 0 < masks.mean() < 1  # both kept and dropped pseudo-labels were exercised


def test_defixmatch_asks_for_the_labeled_strong_view_and_takes_bms_and_dls():
    cfg, algo, _ = _setup(bms=True, dls=True)
    assert algo.labeled_strong and not algo.unlabeled_medium
    assert algo.method_label() == "defixmatch+bms+dls"
    loss, logs = algo.train_step(_batches(1)[0])
    assert {"loss/x", "loss/u", "loss/x_aux", "loss/u_aux", "loss/debias"} <= set(logs)
    assert torch.isfinite(loss)
