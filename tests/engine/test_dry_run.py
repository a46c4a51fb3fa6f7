"""``--dry-run`` makes every setup check the run makes (finessl/engine/preflight.py):
for each bad config, in-process, the dry run and the real run both exit 2 with the
same one ``error:`` line, and neither leaves a run folder."""
from __future__ import annotations

import os

import pytest
import torch

import main
from conftest import tiny_args

# (overrides, what the error line names): one per check of the run's setup
BAD = {
    "device": ({"gpu": "0"}, "gpu 0: CUDA is not available"),
    "dataset name": ({"DATA.NAME": "mnist"}, "DATA.NAME"),
    "data files": ({"DATA.DATAPATH": "{tmp}/nodata"}, "not found"),
    "run folder": ({"output_dir": "{tmp}/a-file/run"}, "is not writable"),
    "weights file": ({"pretrained": "{tmp}/missing.pt"}, "missing.pt"),
    "input size": ({"input_size": "7"}, "input_size: "),
    "partial": ({"partial": "99"}, "partial: 99 blocks asked for, the backbone has 2"),
    "strategy": ({"bn_tuning": "True"}, "bn_tuning: a CNN-only strategy"),
    "classes": ({"DATA.NUMBER_CLASSES": "3"}, "DATA.NUMBER_CLASSES is 3 but CIFAR-10 has 10"),
    "labeled split": ({"DATA.NUM_L": "41"}, "DATA.NUM_L asks for 41"),
    "cutout": ({"DATA.CUTOUT": "40"}, "DATA.CUTOUT 40 is larger than the 32 px input size"),
}


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


@pytest.mark.parametrize("case", list(BAD))
def test_dry_run_refuses_what_the_run_refuses(case, cifar_root, tmp_path, capsys):
    if case == "device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "a-file").write_text("not a folder")
    overrides, needle = BAD[case]
    overrides = {k: v.format(tmp=tmp_path) for k, v in overrides.items()}
    out = str(tmp_path / "new" / "run")
    args = tiny_args(cifar_root, out, num_epochs=1, total_steps=2, **overrides)
    assert main.main(["--dry-run"] + args) == 2
    dry = _error(capsys)
    assert main.main(args) == 2
    assert _error(capsys) == dry and needle in dry, dry
    assert not os.path.exists(tmp_path / "new")  # no run folder, not even its parent
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_a_sound_config_passes_the_dry_run_and_writes_nothing(cifar_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main.main(["--dry-run"] + tiny_args(cifar_root, out)) == 0
    assert "vpt_deep: true" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []
