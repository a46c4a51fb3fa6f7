"""A tiny run with a validation split and label-free signals (DATA.NUM_VAL,
DATA.NUM_SIGNAL): evaluated every epoch, the best validation checkpoint kept,
results.json's last / best_val / best_test, tensorboard's signals, and predict and
evaluation reading the best validation checkpoint (CPU, seconds: one shared run)."""
from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import main_inprocess, tiny_args
from finessl.engine.checkpoint import BEST_VAL


@pytest.fixture(scope="module")
def val_run(cifar_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("val") / "run")
    code, _, err = main_inprocess(tiny_args(cifar_root, out, num_epochs=2, total_steps=3,
                                            **{"DATA.NUM_VAL": 2, "DATA.NUM_SIGNAL": 16}),
                                  rasterise=False)
    assert code == 0, err
    return out


def test_every_epoch_is_validated_and_the_best_kept(val_run):
    results = json.load(open(os.path.join(val_run, "results.json")))
    history = results["history"]
    assert all(0 <= e["val_top1"] <= 1 and "main/entropy" in e["signals"] for e in history)
    best = max(history, key=lambda e: e["val_top1"])  # the first of equals
    assert results["best_val_epoch"] == best["epoch"] and results["best_val_top1"] == best["top1"]
    assert results["best_test_top1"] == results["best_top1"] == max(e["top1"] for e in history)
    kept = torch.load(os.path.join(val_run, BEST_VAL), weights_only=True)
    assert kept["epoch"] == best["epoch"]
    split = json.load(open(os.path.join(val_run, "split.json")))
    assert len(split["val"]) == 20 and not set(split["val"]) & set(split["unlabeled"])
    assert json.load(open(os.path.join(val_run, "diagnostics.json")))["num_val"] == 20


def test_signals_reach_tensorboard(val_run):
    events = EventAccumulator(os.path.join(val_run, "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"epoch/val_top1", "signals/main/confidence", "signals/agree/weak_strong",
            "signals/features/rankme"} <= tags


def test_predict_and_evaluation_read_the_best_validation_checkpoint(val_run, cifar_root,
                                                                    tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(images / "red.png")
    csv = str(tmp_path / "p.csv")
    code, _, err = main_inprocess(["predict", "--model-dir", val_run, "--images", str(images),
                                   "--output", csv, "--metric", "best_val"])
    assert code == 0, err
    assert open(csv).read().startswith("path,class,confidence\nred.png,")
    code, _, err = main_inprocess(["predict", "--model-dir", val_run, "--images", str(images),
                                   "--output", csv, "--metric", "best_test"])
    assert code == 2 and "an oracle" in err
    best = json.load(open(os.path.join(val_run, "results.json")))["best_val_top1"]
    args = tiny_args(cifar_root, val_run) + ["eval_only", "True", "model_dir",
                                             os.path.join(val_run, BEST_VAL)]
    code, stdout, err = main_inprocess(args)
    assert code == 0, err
    assert f"test top-1 {100 * best:.2f}%" in stdout
