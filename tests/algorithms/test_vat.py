"""finessl/algorithms/vat.py: the power iteration, the adversarial loss and the entropy
term against a plain transcription of USB's equations (fp64, the same random probe)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import LinearModel, algorithm_config, image_batches, plain_sgd
from finessl.algorithms import build_algorithm

C = 4


def kl(q_logits, p_logits):
    q = torch.softmax(q_logits, dim=1)
    return (q * (torch.log(q) - torch.log_softmax(p_logits, dim=1))).sum(dim=1).mean()


def test_loss_and_gradients_follow_usb_over_several_steps():
    xi, eps, lam_u, lam_ent = 1e-3, 2.0, 0.7, 0.06
    cfg = algorithm_config("vat", VAT__XI=xi, VAT__EPS=eps, VAT__LAMBDA_U=lam_u,
                           VAT__LAMBDA_ENT=lam_ent)
    model = LinearModel(12, C)
    ref = copy.deepcopy(model)
    algorithm = build_algorithm(cfg, model, C, 5, torch.device("cpu"))
    for t, batch in enumerate(image_batches(5, C)):
        torch.manual_seed(t)
        loss, logs = algorithm.train_step(batch)
        loss.backward()
        W, b = ref.fc.weight, ref.fc.bias
        f = lambda v: v.flatten(1) @ W.t() + b  # noqa: E731
        u = batch["u_w"]
        ul_y = f(u)
        torch.manual_seed(t)
        d = torch.randn(u.shape, dtype=u.dtype)
        d = xi * d / (d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-16)
        d.requires_grad_(True)
        kl(ul_y.detach(), f(u + d)).backward()
        g = d.grad
        W.grad = b.grad = None
        r_adv = eps * g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-16)
        lds = kl(ul_y.detach(), f(u + r_adv))
        p = torch.softmax(ul_y, dim=1)
        ent = -(p * torch.log_softmax(ul_y, dim=1)).sum(dim=1).mean()
        ramp = min(t / 4, 1.0)
        expected = F.cross_entropy(f(batch["x"]), batch["y"]) + lam_u * ramp * lds + lam_ent * ent
        expected.backward()
        assert logs["loss/u"].item() == pytest.approx(lds.item(), abs=1e-9)
        assert logs["loss/u"].item() > 1e-4  # the perturbation does change the prediction
        assert loss.item() == pytest.approx(expected.item(), abs=1e-9)
        for ours, theirs in zip(model.parameters(), ref.parameters()):
            assert torch.allclose(ours.grad, theirs.grad, atol=1e-9, rtol=0)
        plain_sgd(model.parameters()), plain_sgd(ref.parameters())


def test_the_perturbation_is_on_the_normalised_image(monkeypatch):
    """uint8 images are normalised once; the model gets u + d as floats."""
    cfg = algorithm_config("vat")
    model = LinearModel(12, C)
    seen = []
    model.backbone.normalize = lambda images: (images.double() / 255 - 0.5
                                               if images.dtype == torch.uint8 else images)
    classify = model.classify
    monkeypatch.setattr(model, "classify", lambda images: seen.append(images)
                        or classify(model.backbone.normalize(images)))
    algorithm = build_algorithm(cfg, model, C, 5, torch.device("cpu"))
    batch = image_batches(1, C)[0]
    for key in ("x", "u_w"):
        batch[key] = (batch[key].abs() * 50).to(torch.uint8)
    algorithm.train_step(batch)
    assert seen[0].dtype == torch.uint8  # labeled + weak view: the model normalises them
    normalised = batch["u_w"].double() / 255 - 0.5
    adversarial = seen[-1] - normalised
    assert adversarial.flatten(1).norm(dim=1) == pytest.approx([6.0] * 5)  # VAT.EPS
