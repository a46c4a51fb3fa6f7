"""finessl/engine/trained.py: one way to read and rebuild a trained run, its one set of
errors, a config loaded from memory, and predict writing the dataset's own class names."""
from __future__ import annotations

import csv
import os
import random

import pytest
import torch
import yaml

from conftest import tiny_args
from fakedata import write_image_folder
from finessl.config_load import load_config_dict
from finessl.engine.checkpoint import LAST
from finessl.engine.predict import predict
from finessl.engine.run import evaluate, train
from finessl.engine.trained import read_run, read_state, rebuild
from finessl.errors import UserError
from finessl.config_load import load_config


@pytest.fixture(scope="module")
def tiny_run(cifar_root, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("trained") / "run")
    result = train(load_config(None, tiny_args(cifar_root, run, num_epochs=1, total_steps=3)))
    return run, result


def test_a_run_rebuilt_from_its_folder_or_checkpoint_file_is_the_run(tiny_run):
    run, result = tiny_run
    cfg, state, path = read_run(run, "model_dir")
    assert path == os.path.join(run, LAST) and cfg.vpt_len == 4 and cfg.DATA.NUM_L == 4
    rebuilt = rebuild(cfg, state, path, state["classnames"])
    assert not rebuilt.model.training and rebuilt.input_size == 32
    assert rebuilt.classnames == state["classnames"] and rebuilt.device.type in ("cpu", "cuda")
    trained = rebuilt.model.trainable_state_dict()
    for name, value in state["model"].items():
        assert torch.equal(trained[name].cpu(), value), name
    # a checkpoint file alone: its stored config stands in for config.yaml
    from_file, _, _ = read_run(path, "teacher")
    assert from_file.vpt_len == 4 and from_file.backbone == cfg.backbone
    # the global RNGs are as they were: rebuilding draws nothing a run would see
    before = (random.random(), torch.rand(1))
    random.seed(5), torch.manual_seed(5)
    first = (random.random(), torch.rand(1))
    random.seed(5), torch.manual_seed(5)
    rebuild(cfg, state, path, state["classnames"])
    assert (random.random(), torch.rand(1)) == first and before != first
    # evaluation goes through it, and gives the run's own last top-1
    again = load_config(None, ["eval_only", "True", "model_dir", run, "num_workers", "0"])
    assert evaluate(again)["top1"] == pytest.approx(result["last_top1"])


def test_the_one_set_of_errors(tiny_run, tmp_path):
    run, _ = tiny_run
    with pytest.raises(UserError, match=r"^model_dir: name the run folder"):
        read_state("", "model_dir")
    with pytest.raises(UserError, match=r"^teacher: no checkpoint_last.pt in .*no such folder"):
        read_state(str(tmp_path / "gone"), "teacher")
    with pytest.raises(UserError, match=r"^resume: no checkpoint_last.pt in .*no epoch"):
        read_state(str(tmp_path), "resume")
    junk = tmp_path / "junk.pt"
    torch.save({"epoch": 1}, junk)
    with pytest.raises(UserError, match=r"^teacher: .*junk.pt is not a FineSSL checkpoint "
                                        r"\(no seed, model\)"):
        read_state(str(junk), "teacher")
    cfg, state, path = read_run(run, "model_dir")
    with pytest.raises(UserError, match=r"does not fit the model its config describes"):
        rebuild(cfg, state, path, ["a", "b"])  # 2 classes: the heads are 10 wide
    broken = dict(state, model=[1, 2])
    with pytest.raises(UserError, match=r"is not a FineSSL checkpoint \(its model entry"):
        rebuild(cfg, broken, path, state["classnames"])


def test_a_config_loads_from_a_mapping_in_memory(tiny_run):
    run, _ = tiny_run
    stored = yaml.safe_load(open(os.path.join(run, "config.yaml")))
    cfg = load_config_dict(stored, ["num_workers", "3"], "the stored config")
    assert cfg.vpt_len == 4 and cfg.num_workers == 3 and cfg.is_frozen()
    with pytest.raises(UserError, match=r"vpt_dep.*did you mean 'vpt_deep'"):
        load_config_dict({"vpt_dep": True})
    with pytest.raises(UserError, match=r"^the stored config: expected a mapping"):
        load_config_dict([1], source="the stored config")


@pytest.mark.slow  # trains the tiny ViT on an ImageFolder
def test_predict_writes_the_folder_names(tmp_path):
    """Class folders ``apple_pie``, ``bus``, ``cat``: the CSV names them as the folders
    do (to join it back), while the prompts read ``apple pie``."""
    root = write_image_folder(str(tmp_path / "images"), bad_files=False)
    run = str(tmp_path / "run")
    train(load_config(None, tiny_args(root, run, **{"DATA.NAME": "ImageFolder", "num_epochs": 1,
                                                    "total_steps": 2, "DATA.BATCH_SIZE": 4})))
    assert torch.load(os.path.join(run, LAST), weights_only=True)["classnames"] == \
        ["apple_pie", "bus", "cat"]
    output = str(tmp_path / "labels.csv")
    predict(run, os.path.join(root, "test"), output, opts=["num_workers", "0"])
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    folders = sorted(os.listdir(os.path.join(root, "labeled")))
    assert rows and {r["class"] for r in rows} <= set(folders) == {"apple_pie", "bus", "cat"}
