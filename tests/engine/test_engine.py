"""Engine pieces: atomic files, RNG state round-trip, precision fallback, metrics."""
from __future__ import annotations

import logging
import math
import os
import random

import numpy as np
import pytest
import torch

from finessl.engine.checkpoint import rng_state, set_rng_state
from finessl.engine.device import Precision
from finessl.io import atomic_save, atomic_write_text
from finessl.metrics import distribution_entropy, expected_calibration_error, top1


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_failed_save_keeps_the_previous_file_whole(tmp_path):
    path = str(tmp_path / "checkpoint_last.pt")
    atomic_save({"epoch": 1}, path)
    with pytest.raises(RuntimeError):
        atomic_save({"epoch": 2, "bad": Unpicklable()}, path)
    assert torch.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint_last.pt"]


def test_atomic_text_has_normal_permissions(tmp_path):
    path = str(tmp_path / "config.yaml")
    atomic_write_text("a: 1\n", path)
    assert open(path).read() == "a: 1\n"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
@pytest.mark.parametrize("prec", ["fp16", "amp", "bf16"])
def test_half_precision_falls_back_to_fp32_without_cuda(prec, caplog):
    with caplog.at_level(logging.WARNING):
        p = Precision(prec, torch.device("cpu"))
    assert p.mode == "fp32" and not p.fp16_params and p.scaler is None
    assert p.amp_dtype is None
    assert any(f"prec {prec} needs CUDA" in r.message for r in caplog.records)


def test_top1():
    assert top1(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75


def test_distribution_entropy():
    assert distribution_entropy(torch.tensor([5, 5, 0, 0])) == pytest.approx(math.log(2))
    assert distribution_entropy(torch.tensor([3, 0])) == 0.0
    assert distribution_entropy(torch.zeros(3)) == 0.0


def test_expected_calibration_error_by_hand():
    conf = torch.tensor([0.95, 0.95, 0.55, 0.55])
    correct = torch.tensor([True, False, True, True])
    # bin (0.933, 1]: acc 0.5, conf 0.95 -> 0.45 * 2/4; bin (0.533, 0.6]: acc 1, conf .55 -> .45 * 2/4
    assert expected_calibration_error(conf, correct) == pytest.approx(0.45)
