"""Resume starts from the run's own config.yaml and refuses to change what it trains;
``allow_extend`` trains longer with the cosine schedule recomputed; one run per
folder (``run.lock``); and the inputs that used to end in a traceback are one line."""
from __future__ import annotations

import fcntl
import math
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, TINY_VIT, main_inprocess, tiny_args
from helpers import assert_user_error, one_line_error
from finessl.config import RESUME_RUNTIME_KEYS, all_keys
from finessl.data import datasets, folder
from finessl.engine import rundir
from finessl.engine.predict import predict
from finessl.engine.run import fit_schedule
from finessl.errors import UserError
from finessl.config_load import load_config


@pytest.fixture
def stored_run(tmp_path, cifar_root):
    """A run folder holding only the config.yaml a fresh tiny run writes (lr 0.03,
    num_epochs 2, DATA.NUM_L 4, seed 1): enough for everything load_config does."""
    run = str(tmp_path / "run")
    os.makedirs(run)
    cfg = load_config(None, tiny_args(cifar_root, run, num_epochs=2))
    rundir.save_run_config(cfg, 1, run)
    return run


# ---- the run's config.yaml is the base (in-process) --------------------------------------
def test_resume_alone_takes_every_value_from_config_yaml(stored_run, cifar_root):
    stored = load_config(os.path.join(stored_run, "config.yaml"))
    cfg = load_config(None, ["resume", stored_run])
    assert cfg.num_epochs == 2 and cfg.backbone == TINY_VIT and cfg.DATA.NAME == "CIFAR10"
    assert cfg.resume == stored_run and cfg.output_dir == stored_run
    for key in all_keys(cfg):
        if key != "resume":
            assert cfg_get(cfg, key) == cfg_get(stored, key), key


def cfg_get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def test_the_same_full_command_line_resumes(stored_run, cifar_root):
    """What the sweep scripts do: the run's own arguments again, plus resume."""
    cfg = load_config(None, tiny_args(cifar_root, stored_run, num_epochs=2) + ["resume", stored_run])
    assert cfg.num_epochs == 2 and cfg.seed == 1


def test_seed_null_means_the_runs_seed(stored_run, tmp_path):
    path = tmp_path / "authors.yaml"
    path.write_text("seed: null\nresume: null\noutput_dir: out/elsewhere\n")
    cfg = load_config(str(path), ["resume", stored_run])
    assert cfg.seed == 1 and cfg.output_dir == stored_run
    message = one_line_error(load_config, None, ["resume", stored_run, "seed", "7"])
    assert "seed (1 -> 7)" in message


@pytest.mark.parametrize("opts,needle", [
    (["lr", "0.3"], "lr (0.03 -> 0.3)"),
    (["DATA.NUM_L", "2"], "DATA.NUM_L (4 -> 2)"),
    (["algorithm", "fixmatch"], "algorithm ('finessl' -> 'fixmatch')"),
    (["zero_shot", "True"], "algorithm ('finessl' -> 'zeroshot')"),
    (["w_con", "1.0"], "w_con (3.0 -> 1.0)"),
    (["vpt_len", "8"], "vpt_len (4 -> 8)"),
    (["prec", "amp"], "prec ('fp32' -> 'amp')"),
    (["DATA.DATAPATH", "/elsewhere"], "DATA.DATAPATH"),
    (["num_epochs", "4"], "num_epochs (2 -> 4)"),
])
def test_a_key_that_shapes_training_is_refused_in_one_line(stored_run, opts, needle):
    message = one_line_error(load_config, None, ["resume", stored_run] + opts)
    assert message.startswith(f"resume: {stored_run} differs from its config.yaml in ")
    assert needle in message
    assert f"'resume {stored_run}' alone" in message


def test_every_differing_key_is_named_in_one_line(stored_run):
    message = one_line_error(load_config, None, ["resume", stored_run, "lr", "0.3",
                                                 "num_epochs", "4", "momentum", "0.5"])
    listed = message.split(" differs from its config.yaml in ", 1)[1].split(";", 1)[0]
    assert listed == "num_epochs (2 -> 4), lr (0.03 -> 0.3), momentum (0.9 -> 0.5)"
    assert "allow_extend True" in message  # how to train longer


def test_runtime_keys_may_change(stored_run, tmp_path):
    cfg = load_config(None, ["resume", stored_run, "num_workers", "3", "print_freq", "5",
                             "checkpoint_freq", "1", "deterministic", "True",
                             "cache_dir", str(tmp_path), "DATA.DOWNLOAD", "True",
                             "output_dir", str(tmp_path / "ignored")])
    assert cfg.num_workers == 3 and cfg.print_freq == 5 and cfg.output_dir == stored_run


def test_the_allow_list_is_what_the_docs_list():
    text = open(os.path.join(REPO, "docs", "running.md"), encoding="utf-8").read()
    section = text.split("## Resume", 1)[1].split("\n## ", 1)[0]
    for key in RESUME_RUNTIME_KEYS + ("plugins",):
        assert f"`{key}`" in section, key


def test_plugins_may_be_respelled_but_not_changed(stored_run, tmp_path):
    plugin = tmp_path / "noop_plugin.py"
    plugin.write_text("# a plug-in that registers nothing\n")
    other = tmp_path / "other_plugin.py"
    other.write_text("# another one\n")
    path = os.path.join(stored_run, "config.yaml")
    data = yaml.safe_load(open(path))
    data["plugins"] = [str(plugin)]
    open(path, "w").write(yaml.safe_dump(data))
    respelled = os.path.join(str(tmp_path), ".", "noop_plugin.py")
    assert load_config(None, ["resume", stored_run, "plugins", respelled]).plugins == [respelled]
    message = one_line_error(load_config, None, ["resume", stored_run, "plugins", str(other)])
    assert "plugins (" in message


def test_allow_extend_raises_num_epochs_only(stored_run):
    cfg = load_config(None, ["resume", stored_run, "num_epochs", "5", "allow_extend", "True"])
    assert cfg.num_epochs == 5
    message = one_line_error(load_config, None, ["resume", stored_run, "num_epochs", "1",
                                                 "allow_extend", "True"])
    assert "num_epochs (2 -> 1)" in message and "only raises num_epochs" in message
    message = one_line_error(load_config, None, ["resume", stored_run, "num_epochs", "5",
                                                 "allow_extend", "True", "lr", "0.1"])
    assert "lr (0.03 -> 0.1)" in message and "num_epochs" not in message.split(";")[0]
    assert "allow_extend" in one_line_error(load_config, None, ["allow_extend", "True"])


@pytest.mark.parametrize("make,needle", [
    (lambda run: None, "no config.yaml"),
    (lambda run: os.makedirs(os.path.join(run, "config.yaml")), "is a folder"),
    (lambda run: open(os.path.join(run, "config.yaml"), "wb").write(b"\xff\xfe\x00garbage: ["),
     "not valid YAML"),
    (lambda run: open(os.path.join(run, "config.yaml"), "w").write("- a list\n"), "mapping"),
    (lambda run: open(os.path.join(run, "config.yaml"), "w").write("no_such_key: 1\n"),
     "no_such_key"),
])
def test_a_run_folder_without_a_usable_config_yaml(tmp_path, make, needle):
    run = str(tmp_path / "run")
    os.makedirs(run)
    make(run)
    assert needle in one_line_error(load_config, None, ["resume", run])
    assert "is not a folder" in one_line_error(load_config, None,
                                               ["resume", str(tmp_path / "missing")])


def test_extend_run_config_rewrites_num_epochs_only(stored_run):
    path = os.path.join(stored_run, "config.yaml")
    before = yaml.safe_load(open(path))
    assert rundir.extend_run_config(stored_run, 5) == 2
    after = yaml.safe_load(open(path))
    assert after.pop("num_epochs") == 5 and before.pop("num_epochs") == 2
    assert after == before
    assert rundir.extend_run_config(stored_run, 5) is None  # a rerun: nothing to do
    assert not [f for f in os.listdir(stored_run) if f.startswith(".tmp-")]


# ---- the schedule after an extension ------------------------------------------------------
def _closed_form(lr: float, epoch: int, total: int) -> float:
    return lr * (1 + math.cos(math.pi * epoch / total)) / 2


@pytest.mark.parametrize("done", [2, 4])  # mid-run and a finished run
def test_extension_recomputes_the_cosine_for_the_new_length(done):
    params = [torch.nn.Parameter(torch.zeros(2))]
    optim = torch.optim.SGD(params, lr=0.03, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 4.0)
    for _ in range(done):
        optim.step()
        sched.step()
    saved = (optim.state_dict(), sched.state_dict())
    optim = torch.optim.SGD(params, lr=0.03, momentum=0.9)  # a resume: rebuilt, then loaded
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 4.0)
    optim.load_state_dict(saved[0])
    sched.load_state_dict(saved[1])
    trainer = SimpleNamespace(optim=optim, sched=sched)
    assert not fit_schedule(trainer, 4)  # no extension: nothing changes
    assert fit_schedule(trainer, 6)
    rates = [optim.param_groups[0]["lr"]]
    for _ in range(done, 6):
        optim.step()
        sched.step()
        rates.append(optim.param_groups[0]["lr"])
    expected = [_closed_form(0.03, e, 6) for e in range(done, 7)]
    assert rates == pytest.approx(expected, abs=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    assert not fit_schedule(trainer, 6)  # a second resume of the extended run


# ---- one run per folder (in-process) ------------------------------------------------------
def test_run_lock_refuses_a_second_holder_and_names_the_pid(tmp_path):
    with rundir.run_lock(str(tmp_path)) as path:
        assert open(path).read().strip() == str(os.getpid())
        message = one_line_error(lambda: rundir.run_lock(str(tmp_path)).__enter__())
        assert message == (f"output_dir {tmp_path} is in use by process {os.getpid()}; wait "
                           f"for it to finish or stop it, or choose another output_dir")
    assert not os.path.exists(path)  # a run that ends removes it
    with rundir.run_lock(str(tmp_path)):  # and the folder is free again
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / rundir.LOCK
    path.write_text(f"{_dead_pid()}\n")
    with rundir.run_lock(str(tmp_path)):
        assert path.read_text().strip() == str(os.getpid())


@pytest.mark.slow  # a Python subprocess that imports torch: a few seconds
def test_the_kernel_releases_the_lock_of_a_killed_process(tmp_path):
    code = ("import sys, time; from finessl.engine.rundir import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        message = one_line_error(lambda: rundir.run_lock(str(tmp_path)).__enter__())
        assert f"in use by process {proc.pid}" in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / rundir.LOCK).exists()  # SIGKILL: the file stays, the lock does not
    with rundir.run_lock(str(tmp_path)):
        pass


# ---- one line where a traceback was ------------------------------------------------------
@pytest.mark.parametrize("opts,needle", [
    (["print_freq", "0"], "print_freq"), (["print_freq", "-5"], "print_freq"),
    (["w_con", "-3"], "w_con"), (["alpha", "-1"], "alpha"), (["seed", "-1"], "seed"),
    (["momentum", "-0.1"], "momentum"), (["lr", "inf"], "lr"), (["lr", "1e999"], "lr"),
    (["gpu", "-1"], "gpu"), (["template", "{0} {x} {}"], "template"),
])
def test_values_no_run_can_use_are_one_line(opts, needle):
    assert one_line_error(load_config, None, opts).startswith(needle)


def test_predict_output_under_a_file_is_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    message = one_line_error(predict, str(tmp_path / "no-run"), str(images),
                             str(blocker / "sub" / "out.csv"))
    assert str(blocker) in message and "is a file" in message
    message = one_line_error(predict, str(tmp_path / "no-run"), str(images), str(images))
    assert "is a folder" in message


def _image_folder(root, bad_class_files: dict[str, int]):
    for split in ("labeled", "test"):
        for k, name in enumerate(("apple", "bus")):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(os.path.join(root, split, name, "0.png"))
    for name, count in bad_class_files.items():
        target = os.path.join(root, "labeled", name)
        for f in os.listdir(target):
            os.unlink(os.path.join(target, f))
        for j in range(count):
            with open(os.path.join(target, f"bad{j}.png"), "w") as f:
                f.write("text, not a PNG\n")


@pytest.mark.parametrize("count", [1, 3])
def test_a_labeled_class_left_without_a_readable_image_is_one_line(tmp_path, count):
    root = str(tmp_path / "data")
    _image_folder(root, {"bus": count})
    message = one_line_error(datasets.load_dataset, "ImageFolder", root, False)
    assert "class 'bus'" in message
    assert os.path.join(root, "labeled", "bus", "bad0.png") in message
    assert ("more unreadable" in message) == (count > 1)


def test_a_class_keeping_one_readable_image_still_loads(tmp_path):
    root = str(tmp_path / "data")
    _image_folder(root, {})
    with open(os.path.join(root, "labeled", "bus", "bad.png"), "w") as f:
        f.write("text, not a PNG\n")
    raw = datasets.load_dataset("ImageFolder", root, False)
    assert sorted(raw.train_targets) == [0, 1]


# ---- 16-bit images -----------------------------------------------------------------------
@pytest.mark.parametrize("mode,ext", [("I;16", "png"), ("I;16B", "tif"), ("I", "tif")])
def test_16_bit_grey_is_scaled_to_8_bits(tmp_path, mode, ext):
    """A 16-bit PNG opens as I;16 (Pillow's own conversion clips it almost white);
    TIFF keeps I;16B and 32-bit I."""
    values = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    path = str(tmp_path / f"deep.{ext}")
    if mode == "I;16B":
        img = Image.frombytes("I;16B", (32, 32), values.astype(">u2").tobytes())
    else:
        img = Image.fromarray(values.astype(np.int32) if mode == "I" else values)
    img.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    assert folder.check_image(path) == ""
    rgb = folder.open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (32, 32)
    out = np.asarray(rgb).astype(np.int64)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    assert np.abs(out[..., 0] - values / 257.0).max() <= 1
    assert out.min() == 0 and out.max() == 255


def test_8_bit_data_in_mode_i_is_kept(tmp_path):
    values = np.arange(256, dtype=np.int32).reshape(16, 16)
    path = str(tmp_path / "small.tif")
    Image.fromarray(values).save(path)
    assert (np.asarray(folder.open_rgb(path))[..., 0] == values).all()


# ---- through main.py ---------------------------------------------------------------------
SHORT = dict(num_epochs=2, total_steps=3)


@pytest.fixture(scope="module")
def finished(cifar_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("guard") / "run")
    rc, _, err = main_inprocess(tiny_args(cifar_root, out, **SHORT), rasterise=False)
    assert rc == 0, err
    return out


@pytest.mark.parametrize("key,value,needle", [
    ("lr", "0.3", "lr (0.03 -> 0.3)"),
    ("DATA.NUM_L", "2", "DATA.NUM_L (4 -> 2)"),
    ("algorithm", "fixmatch", "algorithm ('finessl' -> 'fixmatch')"),
])
def test_main_refuses_a_training_change_on_resume(finished, cifar_root, key, value, needle):
    before = {f: os.path.getmtime(os.path.join(finished, f)) for f in os.listdir(finished)}
    rc, _, err = main_inprocess(tiny_args(cifar_root, finished, **SHORT, **{key: value})
                          + ["resume", finished])
    assert_user_error(rc, err, f"resume: {finished} differs from its config.yaml", needle)
    assert len([line for line in err.splitlines() if line.strip()]) == 1  # before any work
    after = {f: os.path.getmtime(os.path.join(finished, f)) for f in os.listdir(finished)}
    assert after == before


class Crash(Exception):
    pass


@pytest.mark.slow  # two short runs in this process
def test_resume_alone_continues_a_crashed_run_with_its_own_config(cifar_root, tmp_path,
                                                                 monkeypatch,
                                                                 figures_not_rasterised):
    """A run that died in epoch 2 (here an exception in its first step; a killed process
    leaves the same folder, and its lock is released by the kernel: the test above)
    continues from ``resume RUN`` alone, with the config.yaml it stored."""
    from finessl.engine.trainer import Trainer
    out = str(tmp_path / "run")
    settings = dict(num_epochs=3, total_steps=12, print_freq=1, seed=3)
    real, steps = Trainer.optimizer_step, [0]

    def crash_in_epoch_two(self, *args, **kwargs):
        steps[0] += 1
        if steps[0] == 12 + 1:
            raise Crash
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "optimizer_step", crash_in_epoch_two)
    with pytest.raises(Crash):
        main_inprocess(tiny_args(cifar_root, out, **settings))
    monkeypatch.setattr(Trainer, "optimizer_step", real)
    ckpt = os.path.join(out, "checkpoint_last.pt")
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    stored = open(os.path.join(out, "config.yaml")).read()
    rc, _, err = main_inprocess(["resume", out])  # nothing else given
    assert rc == 0, err
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 3 and state["global_step"] == 3 * 12
    assert len(state["history"]) == 3
    assert open(os.path.join(out, "config.yaml")).read() == stored
    assert not os.path.exists(os.path.join(out, rundir.LOCK))


@pytest.mark.slow  # three short runs
def test_allow_extend_continues_a_finished_run_and_records_it(cifar_root, tmp_path,
                                                             figures_not_rasterised):
    out = str(tmp_path / "run")
    rc, _, err = main_inprocess(tiny_args(cifar_root, out, **SHORT))
    assert rc == 0, err
    rc, stdout, err = main_inprocess(["resume", out, "num_epochs", "4", "allow_extend", "True",
                                "num_workers", "1"])  # a runtime key may change too
    assert rc == 0, err
    assert "extended from 2 to 4 epochs" in stdout  # progress on stdout, not stderr
    config = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert config["num_epochs"] == 4 and config["allow_extend"] is False
    assert config["resume"] is None
    state = torch.load(os.path.join(out, "checkpoint_last.pt"), weights_only=False)
    assert state["epoch"] == 4 and len(state["history"]) == 4
    assert state["scheduler"]["T_max"] == 4
    rates = [float(line.rsplit(" lr ", 1)[1].split()[0])
             for line in open(os.path.join(out, "log.txt")) if "step 3/3" in line]
    assert rates == pytest.approx([_closed_form(0.03, e, 2) for e in range(2)]
                                  + [_closed_form(0.03, e, 4) for e in (2, 3)], rel=1e-3)
    rc, _, err = main_inprocess(["resume", out])  # the recorded length: nothing more to train
    assert rc == 0, err
    assert torch.load(os.path.join(out, "checkpoint_last.pt"),
                      weights_only=False)["epoch"] == 4


@pytest.mark.slow  # a short run
def test_a_second_run_on_a_folder_in_use_is_refused(cifar_root, tmp_path, figures_not_rasterised):
    out = tmp_path / "run"
    out.mkdir()
    path = out / rundir.LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        rc, _, err = main_inprocess(tiny_args(cifar_root, str(out), **SHORT))
        assert_user_error(rc, err, f"output_dir {out} is in use by process {os.getpid()}")
        assert sorted(os.listdir(out)) == [rundir.LOCK]  # nothing written
    finally:
        os.close(fd)  # released; the file stays, as a killed run leaves it
    path.write_text(f"{_dead_pid()}\n")
    rc, _, err = main_inprocess(tiny_args(cifar_root, str(out), **SHORT))
    assert rc == 0, err
    assert os.path.isfile(out / "results.json") and not path.exists()


# ---- output_dir fields ---------------------------------------------------------------------
def test_output_dir_fields_keep_seeds_and_methods_apart(tmp_path):
    from finessl.engine.rundir import format_run_dir, prepare_run_dir
    from finessl.config_load import load_config as load
    cfg = load(os.path.join(REPO, "configs", "peft", "cifar10_N4.yaml"),
               ["output_dir", str(tmp_path / "{config}" / "{algorithm}" / "seed{seed}")])
    assert cfg.output_dir == str(tmp_path / "cifar10_N4" / "{algorithm}" / "seed{seed}")
    first, second = prepare_run_dir(cfg, 1), prepare_run_dir(cfg, 2)
    assert first == str(tmp_path / "cifar10_N4" / "finessl" / "seed1")
    assert second.endswith(os.path.join("finessl", "seed2")) and os.path.isdir(second)
    bare = load(None, ["algorithm", "fixmatch", "DATA.NAME", "CIFAR10", "DATA.NUM_L", "4"])
    assert format_run_dir("out/{config}/{algorithm}/seed{seed}", bare, 3) == \
        "out/CIFAR10_N4/fixmatch/seed3"
    with pytest.raises(UserError, match=r"^output_dir 'x/\{sed\}': fields are \{seed\}"):
        format_run_dir("x/{sed}", bare, 3)
    for name in ("cifar10_N1", "cifar100_N4", "food101_N10"):  # every shipped config
        with open(os.path.join(REPO, "configs", "peft", f"{name}.yaml")) as f:
            assert 'output_dir: "out/{config}/{algorithm}/seed{seed}"' in f.read()


# ---- eval_only takes a run folder alone ----------------------------------------------------
def test_eval_only_rebuilds_from_the_runs_own_config(cifar_root, tmp_path, figures_not_rasterised):
    from finessl.engine.run import evaluate, train
    run = str(tmp_path / "trained")
    result = train(load_config(None, tiny_args(cifar_root, run, num_epochs=1, total_steps=3,
                                               vpt_len=3)))
    cfg = load_config(None, ["eval_only", "True", "model_dir", run, "num_workers", "0"])
    assert cfg.vpt_len == 3 and cfg.backbone == TINY_VIT and cfg.total_steps == 3
    assert cfg.eval_only is True and cfg.model_dir == run
    assert evaluate(cfg)["top1"] == pytest.approx(result["last_top1"])
    assert load_config(None, ["eval_only", "True", "model_dir", run, "DATA.NUM_TEST", "5"]
                       ).DATA.NUM_TEST == 5  # a runtime key given on top is used
    # a training key given on top keeps the run's value (named in a warning)
    assert load_config(None, ["eval_only", "True", "model_dir", run, "vpt_len", "7"]
                       ).vpt_len == 3
    missing = load_config(None, ["eval_only", "True", "model_dir", str(tmp_path / "none")])
    message = one_line_error(evaluate, missing)
    assert message.startswith("model_dir: no checkpoint_last.pt in ")
