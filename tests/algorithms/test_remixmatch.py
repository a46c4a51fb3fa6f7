"""ReMixMatch against a plain transcription of USB's ``remixmatch.py`` and its
``DistAlignEMAHook`` (distribution alignment, sharpening, MixUp, the mixed and pre-mixup
losses, the rotation loss, the ramp-up), several steps in fp64, gradients included."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.algorithms.remixmatch import rotate
from finessl.config import get_cfg_defaults
from helpers import LinearHeads, image_batches, step_both

C, B, N, D = 4, 5, 3, 12


def batches(steps, seed=0):
    return image_batches(steps, C, seed=seed, n_x=N, n_u=B, scale=2)


def ce(logits, targets):
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=1).mean()


class Reference:
    """USB's ReMixMatch, transcribed; p_target from the labels seen (Laplace-smoothed)."""

    def __init__(self, model, rot_head, keys):
        self.model, self.rot, self.keys = model, rot_head, keys
        self.p_model, self.counts = None, torch.zeros(C, dtype=torch.float64)

    def loss(self, batch, it, total):
        k = self.keys
        f = lambda v: self.model.head(v.flatten(1))  # noqa: E731
        x, y, w, s0, s1 = (batch[n] for n in ("x", "y", "u_w", "u_s1", "u_s2"))
        with torch.no_grad():
            probs = torch.softmax(f(w), dim=1)
            mean = probs.mean(dim=0)
            self.p_model = mean if self.p_model is None else \
                self.p_model * k.DA_EMA + mean * (1 - k.DA_EMA)
            self.counts += torch.bincount(y, minlength=C)
            p_target = (self.counts + 1) / (self.counts.sum() + C)
            aligned = probs * (p_target + 1e-6) / (self.p_model + 1e-6)
            aligned = aligned / aligned.sum(dim=-1, keepdim=True)
            sharp = aligned ** (1 / k.T)
            sharp = sharp / sharp.sum(dim=-1, keepdim=True)
        labels = torch.cat([F.one_hot(y, C).double(), sharp, sharp, sharp])
        inputs = torch.cat([x, s0, s1, w])
        lam = torch.distributions.Beta(k.ALPHA, k.ALPHA).sample().item()
        lam = max(lam, 1 - lam)
        index = torch.randperm(inputs.size(0))
        mixed_x = lam * inputs + (1 - lam) * inputs[index]
        mixed_y = lam * labels + (1 - lam) * labels[index]
        logits = f(mixed_x)
        sup, unsup = ce(logits[:N], mixed_y[:N]), ce(logits[N:], mixed_y[N:])
        u1 = ce(f(s0), sharp)
        warm = min(max(it / (k.RAMPUP * total), 0.0), 1.0)
        total_loss = sup + k.KL_RATIO * warm * u1 + k.LAMBDA_U * warm * unsup
        rot_v = torch.randint(4, (B,))
        rotated = torch.stack([torch.rot90(img, int(r), dims=(1, 2)) for img, r in zip(s0, rot_v)])
        rot_loss = F.cross_entropy(self.rot(rotated.flatten(1)), rot_v)
        return total_loss + k.ROT_RATIO * rot_loss


def test_remixmatch_matches_a_transcription_of_usb():
    steps = 5
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.num_epochs, cfg.total_steps = "remixmatch", 2, 5
    keys = cfg.REMIXMATCH
    keys.RAMPUP, keys.DA_EMA = 0.3, 0.6  # ramp over 3 steps; a visible EMA
    ours = LinearHeads(D, C)
    ref_model = copy.deepcopy(ours)
    algorithm = build_algorithm(cfg, ours, C, B, torch.device("cpu"))
    algorithm.modules.double()
    ref_rot = copy.deepcopy(algorithm.modules["rotation"])
    reference = Reference(ref_model, ref_rot, keys)
    ours_params = list(ours.head.parameters()) + list(algorithm.modules.parameters())
    ref_params = list(ref_model.head.parameters()) + list(ref_rot.parameters())
    for it, batch in enumerate(batches(steps)):
        torch.manual_seed(100 + it)
        loss, logs = algorithm.train_step(batch)
        torch.manual_seed(100 + it)
        expected = reference.loss(batch, it, 10)
        assert logs["loss/rot"] > 0 and logs["loss/u1"] > 0
        step_both(ours_params, ref_params, loss, expected, lr=0.5, atol=1e-6)
    assert torch.allclose(algorithm.p_model.double(), reference.p_model, atol=1e-6)


def test_rotate_turns_each_image_by_its_own_quarter_turns():
    images = torch.arange(2 * 1 * 2 * 2, dtype=torch.float).reshape(2, 1, 2, 2)
    out = rotate(images, torch.tensor([0, 1]))
    assert torch.equal(out[0], images[0])
    assert torch.equal(out[1], torch.rot90(images[1], 1, dims=(1, 2)))


def test_no_rotation_head_with_rot_ratio_zero():
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.REMIXMATCH.ROT_RATIO = "remixmatch", 0.0
    algorithm = build_algorithm(cfg, LinearHeads(D, C), C, B, torch.device("cpu"))
    assert len(algorithm.modules) == 0
    loss, logs = algorithm.train_step(batches(1)[0])
    assert "loss/rot" not in logs and torch.isfinite(loss)
