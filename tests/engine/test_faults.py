"""What goes wrong around a run, and what the user sees: a checkpoint that would run
code, one from an older FineSSL, a damaged or half-written one, a full disk, orphan
temp files, and a diverging run. Each is one line, and no good file is lost.
Preemption (SIGTERM / SIGUSR1) is in test_preemption.py."""
from __future__ import annotations

import errno
import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import main_inprocess, tiny_args
from finessl.algorithms import ALGORITHMS
from finessl.config_load import load_config
from finessl.distributed import SINGLE
from finessl.engine.checkpoint import (LAST, PREV, RESUME_KEYS, read_checkpoint, rng_state,
                                       set_rng_state, write_checkpoint)
from finessl.engine.guard import StepGuard
from finessl.engine.trainer import Trainer
from helpers import assert_user_error, fake_precision, old_format_state, one_line_error


class WouldRunCode:
    """Unpickling this calls open(path, 'w'): a file appears if the load ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def state(epoch: int) -> dict:
    return {"epoch": epoch, "step": 0, "global_step": 10 * epoch, "seed": 1,
            "model": {"w": torch.full((3,), float(epoch))}, "optimizer": {}, "scheduler": {},
            "algorithm": {}, "rng": rng_state(), "history": []}


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ---- checkpoints are data ----------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path, container):
    marker = tmp_path / "code-ran"
    payload = {**state(1), "extra": WouldRunCode(marker)}
    path = tmp_path / LAST
    if container == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    message = one_line_error(read_checkpoint, str(tmp_path), RESUME_KEYS)
    assert "could run code" in message and "refused" in message
    assert not marker.exists()
    if container == "torch.save":  # the file is what it claims: an unrestricted load runs it
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_an_old_format_checkpoint_is_named_and_converted_only_with_trust(tmp_path):
    old, keys = old_format_state()
    path = tmp_path / LAST
    torch.save(old, path)
    original = read_bytes(path)
    message = one_line_error(read_checkpoint, str(tmp_path), RESUME_KEYS)
    assert f"convert-checkpoint {tmp_path} --trust" in message and "older FineSSL" in message

    rc, _, err = main_inprocess(["convert-checkpoint", str(tmp_path)])
    assert_user_error(rc, err, "--trust", only_line=True)
    assert read_bytes(path) == original and not (tmp_path / (LAST + ".bak")).exists()

    rc, out, err = main_inprocess(["convert-checkpoint", str(tmp_path), "--trust"])
    assert rc == 0, err
    assert any("converted" in line and ".bak" in line for line in out.splitlines()), out
    assert read_bytes(tmp_path / (LAST + ".bak")) == original
    new = read_checkpoint(str(tmp_path), RESUME_KEYS)  # weights_only=True reads it now
    assert torch.equal(new["model"]["w"], old["model"]["w"])
    assert new["history"] == [{"top1": 0.5, "epoch": 1}] and type(new["history"][0]["top1"]) is float
    set_rng_state(new["rng"])
    assert np.random.rand() == keys["numpy"] and random.random() == keys["python"]
    assert main_inprocess(["convert-checkpoint", str(tmp_path), "--trust"])[0] == 0  # nothing left


def test_convert_refuses_a_file_that_names_code_even_with_trust(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({**state(1), "extra": WouldRunCode(marker)}, tmp_path / LAST)
    rc, _, err = main_inprocess(["convert-checkpoint", str(tmp_path), "--trust"])
    assert_user_error(rc, err, "not converted")
    assert not marker.exists()


# ---- nothing is lost ---------------------------------------------------------------
def test_every_write_keeps_the_previous_checkpoint_and_a_good_one_is_always_on_disk(
        tmp_path, monkeypatch):
    run = str(tmp_path)
    write_checkpoint(state(1), run, 1)
    assert not os.path.exists(os.path.join(run, PREV))
    real_replace, seen = os.replace, []

    def checked_replace(src, dst):  # every rename: checkpoint_last.pt is complete before and after
        seen.append(torch.load(os.path.join(run, LAST), weights_only=True)["epoch"])
        real_replace(src, dst)
        seen.append(torch.load(os.path.join(run, LAST), weights_only=True)["epoch"])
    monkeypatch.setattr(os, "replace", checked_replace)
    for epoch in (2, 3):
        write_checkpoint(state(epoch), run, epoch)
    assert seen[0] == 1 and seen[-1] == 3 and set(seen) == {1, 2, 3}
    assert read_checkpoint(run, RESUME_KEYS)["epoch"] == 3
    assert read_checkpoint(run, RESUME_KEYS, name=PREV)["epoch"] == 2
    assert sorted(os.listdir(run)) == [LAST, PREV]


def test_without_hard_links_the_previous_checkpoint_is_copied(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")
    monkeypatch.setattr(os, "link", no_links)
    for epoch in (1, 2, 3):
        write_checkpoint(state(epoch), str(tmp_path), epoch)
    assert read_checkpoint(str(tmp_path), RESUME_KEYS, name=PREV)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == [LAST, PREV]


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_both_checkpoints(tmp_path,
                                                                           monkeypatch):
    run = str(tmp_path)
    write_checkpoint(state(1), run, 1)
    write_checkpoint(state(2), run, 2)
    before = {name: read_bytes(tmp_path / name) for name in (LAST, PREV)}

    def full_disk(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(torch, "save", full_disk)
    message = one_line_error(write_checkpoint, state(3), run, 3)
    assert os.path.join(run, LAST) in message and "No space left on device" in message
    assert {name: read_bytes(tmp_path / name) for name in (LAST, PREV)} == before
    assert sorted(os.listdir(run)) == [LAST, PREV]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_last_checkpoint_offers_the_previous_one(tmp_path, damage):
    run = str(tmp_path)
    write_checkpoint(state(1), run, 1)
    write_checkpoint(state(2), run, 2)
    good = read_bytes(tmp_path / LAST)
    broken = {"truncated": good[:len(good) // 2], "garbage": b"\x00not a checkpoint" * 50,
              "empty": b""}[damage]
    (tmp_path / LAST).write_bytes(broken)
    message = one_line_error(read_checkpoint, run, RESUME_KEYS)
    assert "damaged" in message and f"{PREV} (epoch 1) is intact" in message
    assert f"python main.py restore-checkpoint {run}" in message

    rc, _, err = main_inprocess(["restore-checkpoint", run])
    assert rc == 0, err
    assert read_checkpoint(run, RESUME_KEYS)["epoch"] == 1
    assert read_bytes(tmp_path / (LAST + ".damaged")) == broken
    rc, _, err = main_inprocess(["restore-checkpoint", run])  # the last one is intact now
    assert_user_error(rc, err, "nothing to restore")


def test_a_damaged_checkpoint_without_a_previous_one_says_so(tmp_path):
    (tmp_path / LAST).write_bytes(b"garbage")
    message = one_line_error(read_checkpoint, str(tmp_path), RESUME_KEYS)
    assert "damaged" in message and PREV not in message


def test_orphan_temp_files_are_removed_when_a_run_starts_in_the_folder(cifar_root, tmp_path):
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    orphans = [".tmp-ab12cd_9", ".tmp-zz99zz99"]
    kept = [".tmp-notes.txt", "my.tmp", ".tmp-short", "sub/.tmp-ab12cd34"]
    for name in orphans + kept:
        (run / name).write_text("x")
    cfg = load_config(None, tiny_args(cifar_root, str(run), num_epochs=1, total_steps=2))
    Trainer(cfg, str(run), seed=0)
    assert not any((run / name).exists() for name in orphans)
    assert all((run / name).exists() for name in kept)


def test_a_checkpoint_whose_algorithm_state_lacks_a_statistic_is_one_line(cifar_root, tmp_path):
    """An older FineSSL's checkpoint of an algorithm that has since gained a statistic
    (CReST's re-sampled labels): named, not a KeyError from load_state_dict."""
    from finessl.engine.run import restore
    opts = tiny_args(cifar_root, str(tmp_path), algorithm="flexmatch", num_epochs=2,
                     total_steps=2)
    Trainer(load_config(None, opts), str(tmp_path), seed=0).fit()
    state = torch.load(tmp_path / LAST, weights_only=False)
    del state["algorithm"]["selected_label"]  # FlexMatch's label memory
    torch.save(state, tmp_path / LAST)
    resumed = Trainer(load_config(None, opts), str(tmp_path), seed=0, write_split=False)
    one_line_error(restore, resumed, str(tmp_path),
                   names=(str(tmp_path / LAST), "flexmatch", "start the run afresh"))


# ---- divergence stops cleanly ------------------------------------------------------
def test_the_guard_finds_a_non_finite_gradient_or_batchnorm_statistic():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model(torch.randn(5, 3)).sum().backward()
    params = list(model.parameters())
    guard = StepGuard(model, params, fake_precision(), SINGLE, torch.device("cpu"))
    loss = torch.tensor(1.0)
    assert guard.check(loss) == (True, False)
    params[0].grad[0, 0] = float("inf")
    assert guard.check(loss) == (False, False)
    assert "gradient of 0.weight" in guard.what(loss)
    amp = StepGuard(model, params, fake_precision(scaler=True), SINGLE, torch.device("cpu"))
    assert amp.check(loss) == (True, False)  # under amp the scaler skips such steps
    params[0].grad[0, 0] = 0.0
    model[1].running_var[2] = float("nan")
    assert guard.check(loss) == (False, False) and amp.check(loss) == (False, False)
    assert "BatchNorm statistic 1.running_var" in guard.what(loss)
    model[1].running_var[2] = 1.0
    assert guard.check(torch.tensor(float("nan"))) == (False, False)


def test_exploding_weights_stop_the_run_with_one_line_and_exit_code_3(cifar_root, tmp_path):
    out = tmp_path / "run"
    code, _, err = main_inprocess(tiny_args(cifar_root, str(out), num_epochs=1, total_steps=60,
                                          lr=1e8))  # diverges within ~5 steps
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at epoch 1/1 step ") and "loss/x " in last
    assert "no checkpoint was written" in last and "Traceback" not in err
    assert "ERROR training diverged at epoch 1/1" in (out / "log.txt").read_text()
    assert not (out / LAST).exists() and not (out / "results.json").exists()


@pytest.mark.slow  # two short epochs
def test_a_nan_loss_stops_at_its_step_and_leaves_the_last_checkpoint_untouched(
        cifar_root, tmp_path, monkeypatch, figures_not_rasterised):
    out, snapshot, steps = tmp_path / "run", tmp_path / "snapshot.pt", 8
    cls = ALGORITHMS.get("finessl")
    step, calls = cls.train_step, [0]

    def nan_at_step_3_of_epoch_2(self, batch):
        calls[0] += 1
        loss, logs = step(self, batch)
        if calls[0] == steps + 3:
            shutil.copy(out / LAST, snapshot)  # checkpoint_last.pt as epoch 1 left it
            loss = loss * float("nan")
            logs = {**logs, "loss/total": loss.detach()}
        return loss, logs
    monkeypatch.setattr(cls, "train_step", nan_at_step_3_of_epoch_2)
    code, _, err = main_inprocess(tiny_args(cifar_root, str(out), num_epochs=2,
                                            total_steps=steps))
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: training diverged at epoch 2/2 step 3/{steps}: the loss is "
                           f"not finite (loss/total nan"), last
    assert f"{LAST} (epoch 1) is left as it was" in last and "Traceback" not in err
    assert last[len("error: "):] in (out / "log.txt").read_text()
    assert read_bytes(out / LAST) == read_bytes(snapshot)
    assert torch.load(out / LAST, weights_only=True)["epoch"] == 1
    assert not (out / "results.json").exists()
