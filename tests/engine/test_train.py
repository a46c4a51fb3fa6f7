"""End to end through ``main.py`` on the tiny ViT and fake CIFAR-10: it learns, it logs,
it checkpoints; eval-only reproduces a run's last figure."""
from __future__ import annotations

import glob
import json
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import main_inprocess, tiny_args
from finessl.config_load import load_config
from finessl.engine.trainer import Trainer


@pytest.fixture(scope="module")
def finished_run(cifar_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "tiny")
    code, stdout, err = main_inprocess(tiny_args(cifar_root, out, num_epochs=4, total_steps=25,
                                                 seed=2), rasterise=False)
    assert code == 0, err
    return out, stdout


@pytest.mark.slow  # the shared run: 100 steps
def test_run_learns_well_above_chance(finished_run):
    out, out_text = finished_run
    state = torch.load(os.path.join(out, "checkpoint_last.pt"), weights_only=False)
    top1 = [r["top1"] for r in state["history"]]
    assert len(top1) == 4
    assert top1[-1] >= 0.3  # 10 classes: chance is 0.1
    last_line = out_text.strip().splitlines()[-1]  # results on stdout
    assert last_line.startswith("best top-1") and f"last top-1 {100 * top1[-1]:.2f}%" in last_line


@pytest.mark.slow  # the shared run: 100 steps
def test_run_folder_holds_config_split_log_and_checkpoint(finished_run):
    out, _ = finished_run
    cfg = load_config(os.path.join(out, "config.yaml"))
    assert cfg.seed == 2 and cfg.vpt_deep
    split = json.load(open(os.path.join(out, "split.json")))
    assert len(split["labeled"]) == 40 and len(split["unlabeled"]) == 400
    assert len(split["sha256"]) == 64
    log = open(os.path.join(out, "log.txt")).read()
    assert log.count("test top-1") >= 4 and "best top-1" in log
    state = torch.load(os.path.join(out, "checkpoint_last.pt"), weights_only=False)
    assert {"model", "optimizer", "scheduler", "scaler", "algorithm", "rng", "epoch",
            "global_step"} <= set(state)
    assert state["epoch"] == 4 and state["global_step"] == 100
    assert state["algorithm"]["selected"].shape == (400,)
    assert not glob.glob(os.path.join(out, ".tmp-*"))


@pytest.mark.slow  # the shared run: 100 steps
def test_tensorboard_has_every_loss_term_and_diagnostic(finished_run):
    out, _ = finished_run
    events = EventAccumulator(os.path.join(out, "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ["train/loss/total", "train/loss/x", "train/loss/x_aux", "train/loss/u",
                "train/loss/u_aux", "train/lr", "train/pseudo/mask_rate",
                "train/pseudo/acc_all", "epoch/top1", "epoch/ece", "epoch/pseudo_acc",
                "epoch/pseudo_entropy"]:
        assert tag in tags, tag
    lr = [e.value for e in events.Scalars("train/lr")]
    assert lr[0] == pytest.approx(0.03) and lr[-1] < lr[0]  # cosine, stepped per epoch
    assert "pseudo/class" in events.Tags()["histograms"]


@pytest.mark.slow  # the shared run: 100 steps
def test_eval_only_reproduces_the_last_top1(finished_run, cifar_root):
    out, _ = finished_run
    state = torch.load(os.path.join(out, "checkpoint_last.pt"), weights_only=False)
    args = tiny_args(cifar_root, out) + ["eval_only", "True", "model_dir", out]
    code, stdout, err = main_inprocess(args)
    assert code == 0, err
    assert f"test top-1 {100 * state['history'][-1]['top1']:.2f}%" in stdout
    # the training command's keys that differ from the run's were named and ignored
    assert "num_epochs 3, total_steps 20, seed 1 ignored" in err


# A run killed with SIGKILL mid-epoch resumes bit-identically from its last epoch's
# checkpoint: tests/test_distributed.py kills a torchrun run so; a SIGTERM, its checkpoint
# mid-epoch and a resume with loader workers: tests/engine/test_preemption.py.


def test_training_changes_prompts_and_heads_but_never_the_backbone(cifar_root, tmp_path):
    opts = tiny_args(cifar_root, str(tmp_path), num_epochs=1, total_steps=5)
    cfg = load_config(None, opts)
    trainer = Trainer(cfg, str(tmp_path), seed=0)
    frozen = {k: v.clone() for k, v in trainer.model.backbone.visual.state_dict().items()}
    tuned = trainer.model.trainable_state_dict()
    trainer.fit()
    for k, v in trainer.model.backbone.visual.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert all(not p.requires_grad for p in trainer.model.backbone.visual.parameters())
    after = trainer.model.trainable_state_dict()
    for name in ["backbone.peft.0.prompts", "head.weight", "aux_head.weight"]:
        assert not torch.equal(after[name], tuned[name]), name
