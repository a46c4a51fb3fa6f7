"""CRMatch against a plain transcription of USB's CRMatch (feature-distance head,
rotation head), loss and gradients over several steps, in fp64."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from helpers import LinearNet, random_batch, shared_model_steps

CPU = torch.device("cpu")


def _setup(**keys):
    cfg = get_cfg_defaults()
    cfg.algorithm = "crmatch"
    cfg.th = 0.4
    for key, value in keys.items():
        setattr(cfg, key, value)
    model = LinearNet()
    algo = build_algorithm(cfg, model, 4, 12, CPU)
    algo.modules.double()
    return cfg, model, algo


def rotate_img(img, rot):
    """USB's rotation of one C x H x W image."""
    if rot == 0:
        return img
    if rot == 90:
        return img.rot90(1, [1, 2])
    if rot == 180:
        return img.rot90(2, [1, 2])
    return img.rot90(1, [2, 1])


def reference_loss(cfg, model, ds, rot_head, b):
    """USB's CRMatch step with its rotation batch: the first len(x) weak unlabeled
    images, each turned four ways, labels (B, 4) transposed and flattened."""
    logits_x = model(b["x"])[0]
    logits_s, _, f_s = model(torch.cat([b["u_s1"], b["u_s2"]]), features=True)
    with torch.no_grad():
        logits_w, _, f_w = model(b["u_w"], features=True)
        max_probs, y_ulb = torch.softmax(logits_w, dim=-1).max(-1)
        mask = max_probs.ge(cfg.th).double()
    lx = F.cross_entropy(logits_x, b["y"])
    lu = (F.cross_entropy(logits_s, y_ulb.repeat(2), reduction="none") * mask.repeat(2)).mean()
    ds_s, ds_w = ds(f_s), ds(f_w).repeat(2, 1)
    ld = F.cosine_embedding_loss(ds_s, ds_w, -torch.ones(len(ds_s), dtype=torch.float64),
                                 reduction="none")
    ld = (ld * mask.repeat(2)).mean()
    imgs = b["u_w"][:len(b["x"])]
    quads = [torch.stack([rotate_img(i, r) for i in imgs]) for r in (0, 90, 180, 270)]
    rot_v = torch.tensor([[0, 1, 2, 3]] * len(imgs)).transpose(1, 0).contiguous().view(-1)
    lrot = F.cross_entropy(rot_head(model(torch.cat(quads), features=True)[2]), rot_v)
    return lx + cfg.w_con * lu + ld + cfg.CRMATCH.ROT * lrot, mask


def test_loss_and_gradients_match_usbs_crmatch_over_steps():
    cfg, model, algo = _setup()
    params = list(model.parameters()) + algo.parameters()
    g = torch.Generator().manual_seed(0)
    kept = []
    ds, rot = algo.modules["ds"], algo.modules["rot"]
    batches = (random_batch(g) for _ in range(4))
    for logs, mask, ours in shared_model_steps(
            algo, params, lambda b: reference_loss(cfg, model, ds, rot, b), batches):
        assert {"loss/ds", "loss/rot"} <= set(logs)
        kept.append(mask.mean().item())
    assert 0 < sum(kept) < len(kept)
    assert all(d.abs().sum() > 0 for d in ours[len(list(model.parameters())):])  # both heads learn


def test_rotation_off_has_no_head_and_no_loss():
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.CRMATCH.ROT = "crmatch", 0.0
    algo = build_algorithm(cfg, LinearNet(), 4, 12, CPU)
    algo.modules.double()
    assert set(algo.modules) == {"ds"}
    _, logs = algo.train_step(random_batch(torch.Generator().manual_seed(1)))
    assert "loss/rot" not in logs and "loss/ds" in logs


def test_finessl_components_run_on_crmatch():
    cfg, model, algo = _setup(bms=True, dls=True)
    loss, logs = algo.train_step(random_batch(torch.Generator().manual_seed(1)))
    loss.backward()
    assert {"loss/x_aux", "loss/u_aux", "loss/ds", "pseudo/margin_max"} <= set(logs)
