"""``main.py``'s command line (``main.main(argv)``, in this process): ``--dry-run``, and
every bad input ending as exit code 2 with one ``error:`` line on stderr and no
traceback. Which config mistakes are caught, and how they are worded, is
test_config.py's; here one of each kind goes through main() for the exit code."""
from __future__ import annotations

import os
import stat

import pytest
import torch
import yaml

from conftest import REPO, main_inprocess as run_main, tiny_args
from fakedata import write_fake_cifar
from finessl.config_load import load_config
from helpers import assert_user_error

CIFAR100_N4 = os.path.join(REPO, "configs", "peft", "cifar100_N4.yaml")


# ---- --dry-run ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["before", "after"])
def test_dry_run_prints_the_merged_config(where, tmp_path):
    data = str(tmp_path / "data")
    write_fake_cifar(data, "cifar100")
    tmp_path = tmp_path / "data"
    pairs = ["vpt_deep", "True", "DATA.DATAPATH", data, "pretrained", "none"]
    args = ["--cfg", CIFAR100_N4] + (["--dry-run"] + pairs if where == "before"
                                     else pairs + ["--dry-run"])
    rc, out, err = run_main(args)
    assert rc == 0, err
    assert "error:" not in err
    dumped = yaml.safe_load(out)
    assert dumped["vpt_deep"] is True
    assert dumped["DATA"]["NUM_L"] == 4
    assert dumped["DATA"]["BATCH_SIZE"] == 32
    assert dumped["DATA"]["DATAPATH"] == str(tmp_path)
    # Nothing is created by a dry run, and its output loads back to the same config.
    assert os.listdir(tmp_path) == ["cifar-100-python"]
    path = tmp_path.parent / f"dumped-{where}.yaml"
    path.write_text(out)
    expected = load_config(CIFAR100_N4, pairs)
    assert load_config(str(path)).dump() == expected.dump()


# ---- config mistakes: one of each kind through main() -------------------------------------
@pytest.mark.parametrize("args,needles", [
    (["vpt_dep", "True", "--dry-run"], ["vpt_dep", "did you mean 'vpt_deep'"]),  # unknown key
    (["DATA.NUM_L", "2.5"], ["DATA.NUM_L", "2.5"]),  # wrong type, without --dry-run
    (["--cfg", "{missing}", "--dry-run"], ["{missing}"]),  # missing config file
], ids=["unknown key", "wrong type", "missing file"])
def test_config_mistakes_exit_2_with_the_error_alone(args, needles, tmp_path):
    missing = str(tmp_path / "nope.yaml")
    args = [a.format(missing=missing) for a in args]
    if "--cfg" not in args:
        args = ["--cfg", CIFAR100_N4] + args
    rc, out, err = run_main(args)
    assert_user_error(rc, err, *[n.format(missing=missing) for n in needles], only_line=True)
    assert out == ""


# ---- the world is not as the config says ----------------------------------------------
def test_missing_dataset_names_the_expected_path(tmp_path, cifar_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run_main(tiny_args(cifar_root, str(tmp_path / "out"),
                                    **{"DATA.DATAPATH": str(empty), "DATA.DOWNLOAD": "False"}))
    assert_user_error(rc, err, os.path.join(str(empty), "cifar-10-batches-py"))


def test_pretrained_weights_unavailable_offline(tmp_path, cifar_root):
    cache = tmp_path / "cache"  # an empty cache: the tag can only come from the network
    cache.mkdir()
    rc, _, err = run_main(
        tiny_args(cifar_root, str(tmp_path / "out"), backbone="ViT-B-16", pretrained="openai",
                  cache_dir=str(cache)),
        env={"HF_HOME": str(cache / "hf"), "HF_HUB_CACHE": str(cache / "hf" / "hub")})
    line = assert_user_error(rc, err)
    assert "pretrained" in line or "weights" in line, line


def test_pretrained_file_missing(tmp_path, cifar_root):
    rc, _, err = run_main(tiny_args(cifar_root, str(tmp_path / "out"),
                                    pretrained="/nonexistent/w.pt"))
    assert_user_error(rc, err, "/nonexistent/w.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_requested_without_cuda(tmp_path, cifar_root):
    rc, _, err = run_main(tiny_args(cifar_root, str(tmp_path / "out"), gpu=0))
    assert_user_error(rc, err, "gpu 0", "CUDA")


def test_unwritable_output_dir(tmp_path, cifar_root):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)  # 0o500
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: a file as parent fails for all
            parent = tmp_path / "a-file"
            parent.write_text("not a folder\n")
            out = parent / "run"
        else:
            out = locked / "run"
        rc, _, err = run_main(tiny_args(cifar_root, str(out)))
        assert_user_error(rc, err, "output_dir", str(out))
        assert not out.exists()
    finally:
        os.chmod(locked, stat.S_IRWXU)


def test_fresh_run_never_overwrites_a_checkpoint(tmp_path, cifar_root):
    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "checkpoint_last.pt"
    payload = os.urandom(256)
    ckpt.write_bytes(payload)
    rc, _, err = run_main(tiny_args(cifar_root, str(out)))
    assert_user_error(rc, err, "resume", str(out))
    assert ckpt.read_bytes() == payload
    assert os.listdir(out) == ["checkpoint_last.pt"]  # no config.yaml, log.txt, split


def test_resume_from_a_folder_without_checkpoint(tmp_path, cifar_root):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rc, _, err = run_main(tiny_args(cifar_root, str(tmp_path / "out"), resume=str(run_dir)))
    assert_user_error(rc, err, "resume", "checkpoint_last.pt", str(run_dir))
