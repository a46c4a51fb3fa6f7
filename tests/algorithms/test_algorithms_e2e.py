"""Every algorithm through the same loop: it learns, and resume after a crash is exact."""
from __future__ import annotations

import json
import os

import pytest

from conftest import REPO, main_inprocess, tiny_args
from finessl.algorithms import ALGORITHMS
from finessl.config_load import load_config
from finessl.errors import UserError
from finessl.report.figures import epoch_images as trainer_figures  # conftest stubs it
from finessl.registry import import_plugin
from helpers import assert_resume_exact


def trained_algorithms() -> list[str]:
    """Every registered algorithm that trains, enumerated from the registry (a new one is
    tested with no edit here); a teacher-taught one (SemiKD) has its own end-to-end
    tests (tests/algorithms/test_semikd.py)."""
    return sorted(name for name, cls in ALGORITHMS.items()
                  if cls.trains and not cls.uses_teacher)


TRAINED = trained_algorithms()
PAPER_METHODS = {"finessl", "supervised", "zeroshot", "pseudolabel", "fixmatch", "flexmatch",
                 "freematch", "softmatch", "debiaspl", "semikd"}


def test_every_paper_method_is_registered_and_unknown_names_are_refused():
    assert PAPER_METHODS <= set(ALGORITHMS)
    assert PAPER_METHODS - {"zeroshot", "semikd"} <= set(TRAINED)  # no training: zero-shot
    with pytest.raises(UserError, match="algorithm: 'mymatch' is not one of ") as info:
        load_config(None, ["algorithm", "mymatch"])
    assert all(name in str(info.value) for name in ALGORITHMS)


def test_a_registered_algorithm_joins_the_tested_set(forget_plugins):
    """The end-to-end tests enumerate the registry: the toy plug-in, once imported, is
    among the algorithms they train."""
    assert "toymatch" not in trained_algorithms()
    import_plugin(os.path.join(REPO, "tests", "assets", "plugins", "toy_match.py"))
    assert "toymatch" in trained_algorithms() and "toymatch" in ALGORITHMS


# Keys whose defaults are tuned for runs of 2^20 steps, set for these 75: distribution
# alignment divides by the first batch's mean prediction for the whole run at momentum
# 0.999 (the run then learns nothing: 20% for both; at 0.9, ReMixMatch 50%, AdaMatch 40%).
# Dash's supervised warm-up (2048 steps) would outlast the run (refused): one epoch here.
# FreeMatch's and SoftMatch's confidence EMAs start at 1/C, and FlexMatch's warm-up
# divides by the images never pseudo-labeled: in 75 steps every threshold stays near 0
# and all three ran as FixMatch at threshold 0, the same to the digit (30% on seeds
# 1-3); here their thresholds move (FreeMatch 49%, SoftMatch 50%, FlexMatch 40%).
SHORT_RUN = {"remixmatch": {"REMIXMATCH.DA_EMA": 0.9}, "adamatch": {"ADAMATCH.EMA": 0.9},
             "dash": {"DASH.WARMUP": 25}, "freematch": {"FREEMATCH.EMA": 0.9},
             "softmatch": {"SOFTMATCH.EMA": 0.9}, "flexmatch": {"FLEXMATCH.WARMUP": False}}


@pytest.mark.slow  # 3 short epochs each
@pytest.mark.parametrize("algorithm", TRAINED)
def test_each_algorithm_learns_through_main(algorithm, cifar_root, tmp_path):
    out = str(tmp_path / algorithm)
    code, _, err = main_inprocess(tiny_args(cifar_root, out, algorithm=algorithm, num_epochs=3,
                                      total_steps=25, seed=2, **SHORT_RUN.get(algorithm, {})))
    assert code == 0, err
    result = json.load(open(os.path.join(out, "results.json")))
    assert result["algorithm"] == algorithm
    assert result["last_top1"] >= 0.3, result["last_top1"]  # 10 classes: chance is 0.1
    # the figures the trainer sends to tensorboard after an epoch, from this algorithm's
    # history (the suite builds them nowhere else: conftest.figures_not_rasterised)
    record = json.load(open(os.path.join(out, "diagnostics.json")))
    last = record["history"][-1]
    tags = {"report/reliability", "report/per_class"} | \
        ({"report/confidence"} if last.get("confidence") else set()) | \
        ({"report/pace"} if last.get("pseudo_counts") else set())
    images = trainer_figures(record["history"], record["confusion"], record["classnames"],
                               record["aux_trained"])
    assert set(images) == tags and all(image.shape == (4, 4, 3) for image in images.values())


def test_zero_shot_only_evaluates(cifar_root, tmp_path, figures_not_rasterised):
    out = str(tmp_path / "zs")
    code, _, err = main_inprocess(tiny_args(cifar_root, out, algorithm="zeroshot"))
    assert code == 0, err
    result = json.load(open(os.path.join(out, "results.json")))
    assert result["last_epoch"] == 0 and len(result["history"]) == 1
    assert not os.path.exists(os.path.join(out, "checkpoint_last.pt"))


@pytest.mark.parametrize("algorithm", TRAINED)
def test_resume_after_a_crash_mid_epoch_is_exact(algorithm, cifar_root, tmp_path):
    # 2 epochs of 3 steps: the crash in step 2 of epoch 2, resumed from epoch 1's end
    keys = {"DASH.WARMUP": 3} if algorithm == "dash" else {}  # rho set in epoch 2
    assert_resume_exact(cifar_root, tmp_path, steps=3, algorithm=algorithm, **keys)
