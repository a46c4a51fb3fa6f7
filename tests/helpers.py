"""Plain helper functions and classes shared by several test modules (fixtures live in
conftest.py, fake data sets in fakedata.py). Test modules import from here, never from
each other."""
from __future__ import annotations

import copy
import math
import os
import signal

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode

from conftest import TINY_VIT, tiny_args
from finessl.algorithms import build_algorithm
from finessl.config import get_cfg_defaults
from finessl.config_load import load_config
from finessl.engine import signals
from finessl.engine.run import restore
from finessl.engine.trainer import Trainer
from finessl.errors import UserError
from finessl.models import build_model
from finessl.models.heads import CosineHead


# ---- models of fixed logits (test_losses, test_algorithms, consistency methods) ------
class Lookup(nn.Module):
    """A head that returns a fixed row of logits per one-hot feature."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.shift = nn.Parameter(torch.zeros(()))

    def forward(self, feat):
        return feat @ self.table + self.shift


class OneHot(nn.Module):
    """A TableModel's 'backbone': the image id stored in pixel [0, 0, 0], one-hot
    (``feat_dim`` wide, so that the heads of an algorithm's own fit it)."""

    def __init__(self, num_ids):
        super().__init__()
        self.feat_dim = num_ids

    def forward(self, images):
        return nn.functional.one_hot(images[:, 0, 0, 0].long(), self.feat_dim).float()


class TableModel(nn.Module):
    """Fixed (main, aux) logits, looked up by the image id stored in pixel [0, 0, 0]."""

    def __init__(self, main, aux):
        super().__init__()
        self.num_ids = main.shape[0]
        self.head, self.aux_head = Lookup(main), Lookup(aux)
        self.backbone = OneHot(self.num_ids)

    def forward(self, images, detach_aux=True, features=False):
        feat = self.backbone(images)
        out = self.head(feat), self.aux_head(feat.detach() if detach_aux else feat)
        return (*out, feat) if features else out


class LinearHeads(nn.Module):
    """A fixed-size fp64 linear model on flattened (float) images, with the model's
    interface (main and aux logits, features, ``classify``): the algorithms' key tests
    differentiate through it. ``backbone.feat_dim`` sizes an algorithm's own heads."""

    def __init__(self, in_dim, num_classes, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Flatten()
        self.backbone.feat_dim = in_dim
        self.head = nn.Linear(in_dim, num_classes).double()
        self.aux_head = nn.Linear(in_dim, num_classes).double()

    def forward(self, images, detach_aux=True, features=False):
        feat = self.backbone(images)
        out = self.head(feat), self.aux_head(feat.detach() if detach_aux else feat)
        return (*out, feat) if features else out

    def classify(self, images):
        return self.head(self.backbone(images))


def id_images(ids):
    """Images a TableModel reads as the given ids."""
    x = torch.zeros(len(ids), 3, 2, 2)
    x[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.float)
    return x


def ce(z, t):
    """Cross-entropy of the logits ``z`` (a list) against class ``t``, by hand."""
    return -z[t] + math.log(sum(math.exp(v) for v in z))


# ---- a small trainable model in fp64 (the USB algorithms' transcription tests) ------
class LinearNet(nn.Module):
    """Features tanh(W x) of the flattened image, main and aux linear heads, in fp64; the
    interface of the models the algorithms train (``backbone.feat_dim`` sizes their
    heads)."""

    def __init__(self, in_dim=12, feat_dim=6, num_classes=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Linear(in_dim, feat_dim).double()
        self.backbone.feat_dim = feat_dim
        self.head = nn.Linear(feat_dim, num_classes).double()
        self.aux_head = nn.Linear(feat_dim, num_classes).double()

    def features(self, images):
        return torch.tanh(self.backbone(images.flatten(1)))

    def forward(self, images, detach_aux=True, features=False):
        feat = self.features(images)
        out = self.head(feat), self.aux_head(feat.detach() if detach_aux else feat)
        return (*out, feat) if features else out


def random_batch(generator, n_x=4, n_u=6, num_labeled=8, num_unlabeled=12, num_classes=4,
                 views=("u_w", "u_s1", "u_s2")):
    """A batch of random fp64 images (3 x 2 x 2) with distinct labeled and unlabeled
    indices, every key the engine's batches carry."""
    image = lambda n: torch.randn(n, 3, 2, 2, generator=generator, dtype=torch.float64)  # noqa: E731
    batch = {"x": image(n_x), "y": torch.randint(num_classes, (n_x,), generator=generator),
             "x_idx": torch.randperm(num_labeled, generator=generator)[:n_x],
             "u_idx": torch.randperm(num_unlabeled, generator=generator)[:n_u],
             "u_true": torch.randint(num_classes, (n_u,), generator=generator)}
    batch.update({k: image(n_u) for k in views})
    return batch


def grads(params):
    """The parameters' gradients (zeros where none), then cleared."""
    out = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


def side_by_side(algorithm, ref_model, reference, batches, lr=0.5, tol=1e-10):
    """For each batch, our step's loss and gradients against ``reference(ref_model,
    batch) -> (loss, info)`` (a plain transcription of the paper's / USB's step on a
    copy of the model), to ``tol``, then the same SGD step on both models; yields
    (our logs, the reference's info) per step for the test's own checks."""
    ours, theirs = list(algorithm.model.parameters()), list(ref_model.parameters())
    for batch in batches:
        loss, logs = algorithm.train_step(batch)
        loss.backward()
        ref_loss, info = reference(ref_model, batch)
        ref_loss.backward()
        g_ours, g_ref = grads(ours), grads(theirs)
        assert abs(loss.item() - ref_loss.item()) <= tol, (loss.item(), ref_loss.item())
        for a, b in zip(g_ours, g_ref):
            assert torch.allclose(a, b, rtol=0, atol=tol), (a - b).abs().max()
        with torch.no_grad():
            for p, g in zip(ours + theirs, g_ours + g_ref):
                p.sub_(lr * g)
        yield logs, info


def side_by_side_setup(algorithm, num_unlabeled=12, th=0.5, **keys):
    """(cfg, algorithm, ref_model) for :func:`side_by_side`: ``algorithm`` at threshold
    ``th`` on a LinearNet whose main head is scaled by 4 (confident and unconfident
    predictions alike), and a copy of that model for the reference; ``keys`` set
    top-level config keys."""
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.th = algorithm, th
    for key, value in keys.items():
        setattr(cfg, key, value)
    model = LinearNet()
    with torch.no_grad():
        model.head.weight.mul_(4.0)
    ref_model = copy.deepcopy(model)
    return cfg, build_algorithm(cfg, model, 4, num_unlabeled, torch.device("cpu")), ref_model


def shared_model_steps(algorithm, params, reference, batches, lr=0.5, atol=1e-6):
    """For each batch, our step's loss and the gradients of ``params`` against
    ``reference(batch) -> (loss, info)`` (a transcription's step on the same model,
    taken after ours), to ``atol``; yields (our logs, info, our gradients) for the test's
    own checks, then takes one plain SGD step of ours, so the next batch sees new
    weights."""
    for batch in batches:
        loss, logs = algorithm.train_step(batch)
        loss.backward()
        ours = grads(params)
        ref_loss, info = reference(batch)
        ref_loss.backward()
        theirs = grads(params)
        assert loss.item() == pytest.approx(ref_loss.item(), abs=atol)
        for a, b in zip(ours, theirs):
            assert torch.allclose(a, b, atol=atol, rtol=0)
        yield logs, info, ours
        with torch.no_grad():
            for p, d in zip(params, ours):
                p -= lr * d


def shared_model_epochs(algorithm, params, reference, draw, epochs=2, steps=3, **kwargs):
    """:func:`shared_model_steps` over ``epochs`` epochs of ``steps`` batches, each from
    ``draw()``, the algorithm told of each epoch's start; ``reference(batch, epoch)``;
    yields (epoch, our logs, info, our gradients)."""
    for epoch in range(epochs):
        algorithm.on_epoch_start(epoch)
        batches = (draw() for _ in range(steps))
        step = lambda batch: reference(batch, epoch)  # noqa: E731
        for out in shared_model_steps(algorithm, params, step, batches, **kwargs):
            yield (epoch, *out)


# ---- a fixed linear classifier, batches of images, SGD on two copies (consistency
# methods; the LinearHeads transcriptions: test_dash, test_uda, test_*mixmatch) ---------
class Normalizer:
    """A stand-in tower's input normalisation, as ``ImageTower.normalize``: float images
    are taken as already normalised."""

    def normalize(self, images):
        return images


class LinearModel(nn.Module):
    """A fixed fp64 linear classifier of flattened images with the model interface the
    algorithms use (``classify``, ``forward``, ``backbone.normalize``, the trainable
    state): equations of consistency losses are checked on it by hand."""

    def __init__(self, in_dim: int, num_classes: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(in_dim, num_classes).double()
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(num_classes, in_dim, generator=g, dtype=torch.float64))
            self.fc.bias.copy_(torch.randn(num_classes, generator=g, dtype=torch.float64))
        self.backbone = Normalizer()

    def classify(self, images):
        return self.fc(images.flatten(1))

    def forward(self, images, detach_aux=True, features=False):
        logits = self.classify(images)
        return (logits, logits, images.flatten(1)) if features else (logits, logits)

    def _trained_buffers(self):
        return {}

    def trainable_state_dict(self):
        return {n: p.detach().clone() for n, p in self.named_parameters()}

    def load_trainable_state_dict(self, state):
        with torch.no_grad():
            for n, p in self.named_parameters():
                p.copy_(state[n])


def image_batches(steps: int, num_classes: int, shape=(3, 2, 2), seed: int = 0, n_x: int = 3,
                  n_u: int = 5, scale: float = 1.0, num_unlabeled: int | None = None) -> list[dict]:
    """``steps`` batches of fp64 images (``n_x`` labeled, ``n_u`` unlabeled, standard
    normal times ``scale``) for a LinearModel or LinearHeads; the unlabeled indices are
    0 .. n_u - 1, or ``n_u`` drawn from ``num_unlabeled``."""
    g = torch.Generator().manual_seed(seed)
    images = lambda n: torch.randn(n, *shape, generator=g, dtype=torch.float64) * scale  # noqa: E731
    indices = lambda: (torch.arange(n_u) if num_unlabeled is None  # noqa: E731
                       else torch.randperm(num_unlabeled, generator=g)[:n_u])
    return [{"x": images(n_x), "y": torch.randint(0, num_classes, (n_x,), generator=g),
             "u_w": images(n_u), "u_s1": images(n_u), "u_s2": images(n_u), "u_idx": indices(),
             "u_true": torch.randint(0, num_classes, (n_u,), generator=g)} for _ in range(steps)]


def plain_sgd(params, lr: float = 0.1) -> None:
    """p <- p - lr * grad, grads cleared: the same update for a model and its reference."""
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None


def step_both(ours, theirs, loss, expected, lr=0.5, atol=1e-9):
    """One step of two copies of a model: our loss and the reference's agree to ``atol``,
    each is backpropagated into its own parameters (``ours``, ``theirs``: lists, their
    gradients cleared first), the gradients agree to ``atol``, and both take the same SGD
    step."""
    assert abs(loss.item() - expected.item()) <= atol
    for params, value in ((ours, loss), (theirs, expected)):
        for p in params:
            p.grad = None
        value.backward()
    for p, q in zip(ours, theirs):
        assert torch.allclose(p.grad, q.grad, atol=atol, rtol=0)
        with torch.no_grad():
            p -= lr * p.grad
            q -= lr * q.grad


def algorithm_config(algorithm: str, num_epochs: int = 1, total_steps: int = 10, **keys):
    """The default config for ``algorithm``, with dotted ``keys`` given as NODE__KEY."""
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.num_epochs, cfg.total_steps = algorithm, num_epochs, total_steps
    for key, value in keys.items():
        node, leaf = key.split("__")
        cfg[node][leaf] = value
    return cfg


# ---- imbalanced methods on FixMatch in fp64 (test_imb_*) -------------------------------
IMB_C, IMB_D_IN, IMB_FEAT = 3, 12, 5
IMB_LABELED_COUNTS = torch.tensor([10, 5, 2])


class ImbModel(nn.Module):
    """A linear 'backbone' and the two cosine heads, in fp64."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(IMB_D_IN, IMB_FEAT)
        self.backbone.feat_dim = IMB_FEAT
        self.head, self.aux_head = CosineHead(IMB_FEAT, IMB_C), CosineHead(IMB_FEAT, IMB_C)

    def forward(self, images, detach_aux=True, features=False):
        feat = self.backbone(images.flatten(1))
        out = self.head(feat), self.aux_head(feat.detach() if detach_aux else feat)
        return (*out, feat) if features else out


def build_imb(imb, num_unlabeled=12, algorithm="fixmatch", **keys):
    """(cfg, model, algorithm) of ``algorithm`` + ``imb`` on a fp64 ImbModel; ``keys``
    as ``NODE__LEAF=value`` (or a top-level ``leaf=value``)."""
    cfg = get_cfg_defaults()
    cfg.algorithm, cfg.imb, cfg.num_epochs = algorithm, imb, 4
    for key, value in keys.items():
        node, _, leaf = key.rpartition("__")
        setattr(getattr(cfg, node) if node else cfg, leaf, value)
    torch.manual_seed(0)
    model = ImbModel().double()
    algo = build_algorithm(cfg, model, IMB_C, num_unlabeled, torch.device("cpu"),
                           labeled_counts=IMB_LABELED_COUNTS)
    algo.modules.double()
    return cfg, model, algo


def imb_batch(step, n_x=4, n_u=6, num_unlabeled=12):
    g = torch.Generator().manual_seed(100 + step)
    images = lambda n: torch.randn(n, 3, 2, 2, generator=g, dtype=torch.float64)  # noqa: E731
    u_idx = torch.randperm(num_unlabeled, generator=g)[:n_u]
    return {"x": images(n_x), "y": torch.randint(0, IMB_C, (n_x,), generator=g),
            "u_w": images(n_u), "u_s1": images(n_u), "u_s2": images(n_u), "u_idx": u_idx,
            "u_true": torch.randint(0, IMB_C, (n_u,), generator=g)}


def cosine(x, head):
    """A cosine head, by hand: s * x/|x| . W/|W|."""
    w = head["weight"]
    return head["logit_scale"] * (x / x.norm(dim=-1, keepdim=True)) @ (w / w.norm(dim=-1, keepdim=True)).t()


def linear_features(p):
    """The ImbModel's backbone, by hand, from the parameters ``p``."""
    return lambda x: x.flatten(1) @ p["backbone.weight"].t() + p["backbone.bias"]


def main_head(p):
    return {"weight": p["head.weight"], "logit_scale": p["head.logit_scale"]}


def fixmatch_loss(p, b, th, w_con, targets=None, mask=None, lb_weights=None, ulb_weights=None):
    """FixMatch (Sohn et al. Eq. 2) on both strong views: ``targets`` replace argmax,
    ``mask`` the confidence mask; ``lb_weights`` / ``ulb_weights`` (C) weight each
    sample's term by its (pseudo-)label's class."""
    f = linear_features(p)
    head = main_head(p)
    ce_x = F.cross_entropy(cosine(f(b["x"]), head), b["y"], reduction="none")
    loss_x = (ce_x * (1 if lb_weights is None else lb_weights[b["y"]])).mean()
    with torch.no_grad():
        conf, argmax = torch.softmax(cosine(f(b["u_w"]), head), -1).max(-1)
    targets = argmax if targets is None else targets
    mask = (conf >= th).double() if mask is None else mask
    if ulb_weights is not None:
        mask = mask * ulb_weights[targets]
    loss_u = sum((F.cross_entropy(cosine(f(b[v]), head), targets, reduction="none") * mask).sum()
                 for v in ("u_s1", "u_s2")) / (2 * len(targets))
    return loss_x + w_con * loss_u, f, conf


def weak_probs(p, b):
    """softmax of the main head on the weak view (no autograd)."""
    with torch.no_grad():
        return torch.softmax(cosine(linear_features(p)(b["u_w"]), main_head(p)), -1)


def compare_grads(loss, params, ours):
    """Our parameters' .grad against the transcription's (None: unused, as the aux head)."""
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    for (name, g), p in zip(zip(params, grads), ours):
        if g is None:
            assert p.grad is None or not p.grad.any(), name
        else:
            assert torch.allclose(p.grad, g, atol=1e-6, rtol=0), name


def leaf_params(named):
    return {n: p.detach().clone().requires_grad_(True) for n, p in named}


# ---- crash and resume (test_algorithms_e2e, test_imb_*, test_semikd) -----------------
class Killed(Exception):
    """A stand-in for the process being killed in the middle of a step."""


def assert_states_equal(a, b, where="state"):
    """Two algorithm states hold the same keys and the same values, exactly; a nested dict
    (an algorithm's own modules, as ReMixMatch's rotation head) entry by entry."""
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            assert_states_equal(a[key], b[key], f"{where}.{key}")
        else:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), f"{where}.{key}"


def assert_runs_equal(reference, resumed):
    """Two trainers ended alike: trainable weights, the algorithm's state and the
    evaluation history, exactly."""
    a, b = reference.model.trainable_state_dict(), resumed.model.trainable_state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert_states_equal(reference.algorithm.state_dict(), resumed.algorithm.state_dict(),
                        "algorithm")
    assert [r["top1"] for r in reference.history] == [r["top1"] for r in resumed.history]


def assert_resume_exact(cifar_root, tmp_path, steps=4, preempt=False, crash_step=None, **keys):
    """A tiny run of 2 epochs x ``steps`` (``keys``: its options, the algorithm's
    included) stopped at step ``crash_step`` of epoch two (default ``steps // 2 + 1``)
    and resumed ends as the run that was not (:func:`assert_runs_equal`). Killed: it
    resumes from the end of epoch one; ``preempt``: stopped by SIGUSR1 instead, from the
    mid-epoch checkpoint that leaves. The reference trainer."""
    crash_step = steps // 2 + 1 if crash_step is None else crash_step

    def trainer(folder, write_split=True):
        opts = tiny_args(cifar_root, str(tmp_path / folder), num_epochs=2, total_steps=steps,
                         **keys)
        return Trainer(load_config(None, opts), str(tmp_path / folder), seed=3,
                       write_split=write_split)

    reference = trainer("reference")
    reference.fit()
    crashed = trainer("crashed")
    calls = {"n": 0}
    step = crashed.algorithm.train_step

    def crash_in_epoch_two(batch):
        calls["n"] += 1
        if calls["n"] == steps + crash_step:
            if not preempt:
                raise Killed
            os.kill(os.getpid(), signal.SIGUSR1)
        return step(batch)
    crashed.algorithm.train_step = crash_in_epoch_two
    with signals.handling(), pytest.raises(signals.Preempted if preempt else Killed):
        crashed.fit()
    resumed = trainer("crashed", write_split=False)
    restore(resumed, str(tmp_path / "crashed"))
    if not preempt:
        assert resumed.start_epoch == 1
    resumed.fit()
    assert_runs_equal(reference, resumed)
    return reference


def assert_imb_resume_exact(imb, cifar_root, tmp_path, steps=4, preempt=False, **keys):
    """:func:`assert_resume_exact` for FixMatch + ``imb`` at threshold 0.3, stopped at
    step ``steps // 2`` of epoch two."""
    return assert_resume_exact(cifar_root, tmp_path, steps, preempt, crash_step=steps // 2,
                               algorithm="fixmatch", imb=imb, th=0.3, **keys)


# ---- one step of the tiny ViT (test_step_equivalence, test_peft) ---------------------
def setup_tiny_step(vpt: str):
    """(cfg, model, algorithm, batch) for one FineSSL step of the tiny ViT with the
    strategy switch ``vpt`` on, 5 classes, 10 unlabeled images and nonzero margins."""
    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained, cfg.vpt_len = TINY_VIT, "none", 4
    setattr(cfg, vpt, True)
    torch.manual_seed(0)
    model = build_model(cfg, [f"c{i}" for i in range(5)], torch.device("cpu"), half=False)
    algorithm = build_algorithm(cfg, model, 5, 10, torch.device("cpu"))
    algorithm.memory.load(torch.tensor([0, 0, 1, 2, -1, -1, 3, 0, -1, -1]))  # margins != 0
    g = torch.Generator().manual_seed(1)
    images = lambda: torch.randn(3, 3, 32, 32, generator=g)  # noqa: E731
    batch = {"x": images(), "y": torch.tensor([0, 3, 4]), "u_w": images(), "u_s1": images(),
             "u_s2": images(), "u_idx": torch.tensor([4, 5, 8]), "u_true": torch.tensor([0, 1, 2])}
    return cfg, model, algorithm, batch


def sgd_update(model, loss):
    """Backpropagate ``loss``, take one SGD step; the change of each trainable parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optim = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=5e-4)
    optim.zero_grad()
    loss.backward()
    optim.step()
    return [p.detach() - b for p, b in zip(params, before)]


# ---- faults: precision stand-ins and an old-format checkpoint (test_faults) ----------
def fake_precision(scaler: bool = False):
    """What StepGuard reads of a Precision: ``scaler`` (amp) or none (fp32)."""
    from types import SimpleNamespace
    return SimpleNamespace(scaler=object() if scaler else None, mode="amp" if scaler else "fp32")


def old_format_state():
    """A checkpoint as FineSSL wrote it before checkpoints were plain data: the RNG state
    holds np.random.get_state()'s raw tuple (a uint32 array), the history a numpy float.
    Also the first draws of numpy and Python after restoring that state."""
    import random

    import numpy as np
    random.seed(7)
    np.random.seed(7)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    draws = {"numpy": np.random.rand(), "python": random.random()}
    state = {"epoch": 1, "global_step": 10, "seed": 1, "model": {"w": torch.arange(3.0)},
             "optimizer": {}, "scheduler": {}, "algorithm": {},
             "rng": {"python": python_state, "torch": torch.get_rng_state(),
                     "numpy": numpy_state},
             "history": [{"top1": np.float64(0.5), "epoch": 1}]}
    return state, draws


# ---- the one-line error contract ---------------------------------------------------------
def one_line_error(call, *args, names=()) -> str:
    """``call(*args)`` raises a UserError of one non-empty line, naming each of ``names``
    (a key, a file, where to get it); its message."""
    with pytest.raises(UserError) as exc:
        call(*args)
    message = str(exc.value)
    assert message.strip() and len(message.splitlines()) == 1, message
    assert "Traceback" not in message, message
    for name in names:
        assert name in message, (name, message)
    return message


def assert_user_error(rc: int, stderr: str, *needles: str, only_line: bool = False) -> str:
    """main.py's contract for bad input (docs/running.md#exit-codes): exit 2, exactly one
    ``error:`` line, the last thing on stderr, naming each of ``needles``, and no
    traceback; the line.

    Progress lines (run folder, dataset sizes) go to stdout and warnings to stderr;
    ``only_line`` demands that the error is all there is on stderr (config mistakes,
    caught before any logging)."""
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert lines[-1] == errors[0], stderr
    assert errors[0][len("error:"):].strip(), stderr
    if only_line:
        assert lines == errors, stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# ---- data configs (tests/data) ------------------------------------------------------------
def data_cfg(root: str, name: str = "CIFAR10", num_l: int = 2, num_u: int = 4, **keys):
    """A config of the DATA node alone, as the loaders read it: ``name`` from ``root`` (no
    download), ``num_l`` labeled and ``num_u`` unlabeled images per class, balanced, the
    number of classes from the dataset; ``keys`` add or replace DATA keys."""
    data = {"NAME": name, "DATAPATH": root, "DOWNLOAD": False, "NUM_L": num_l, "NUM_U": num_u,
            "IMB_L": 1.0, "IMB_U": 1.0, "NUMBER_CLASSES": -1}
    data.update(keys)
    return CfgNode({"DATA": data})


# ---- the authors' released YAMLs (tests/assets/released/) --------------------------------
RELEASED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "released")


def released_yaml(name: str) -> str:
    """The text of the authors' released config ``name`` (Gank0078/FineSSL
    configs/peft/), kept verbatim in tests/assets/released/ so the tests load what
    the authors shipped, not a copy pasted into each test."""
    with open(os.path.join(RELEASED, name), encoding="utf-8") as f:
        return f.read()
