"""The yacs defaults tree and :func:`load_config`: released configs load unchanged,
defaults are the released values, and every user mistake is one ``UserError``."""
from __future__ import annotations

import glob
import logging
import os
import re

import pytest
import yaml

from conftest import REPO
from finessl.config import (CORE_KEYS, CROSS_CHECKS, INERT_KEYS, KEYS, all_keys, declare,
                            declared_keys, get_cfg_defaults, model_keys, positive)
from finessl.config_load import load_config
from finessl.errors import UserError

# The authors' released YAML (Gank0078/FineSSL), verbatim.
AUTHORS_YAML = """\
dataset: "CIFAR100"
root: "./datasets/cifar-100"
backbone: "ViT-B/16"
resolution: 32
stride: 16
output_dir: "out/cifar-100/N4"
resume: null
checkpoint_freq: 0
print_freq: 10
seed: null
deterministic: False
gpu: null
num_workers: 8
prec: "fp16"
num_epochs: 30
lr: 0.03
weight_decay: 5e-4
momentum: 0.9
DATA:
  NAME: "CIFAR100"
  DATAPATH: "../datasets/cifar-100"
  NUMBER_CLASSES: 100
  NUM_L: 4
  NUM_U: 500
  IMB_L: 1.0
  IMB_U: 1.0
  MU_U: 1
  BATCH_SIZE: 32
finetune: False
bias_tuning: False
vpt_shallow: False
vpt_deep: False
vpt_last: False
lam_tokens: 1.0
vpt_len: 50
adapter: False
adapter_dim: 8
lora: False
lora_dim: 16
ssf: False
th: 0.7
mode: 0
alpha: 8.0
w_con: 3.0
smoothing: 0.5
"""

PEFT_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "peft", "*.yaml")))


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- the authors' YAML ------------------------------------------------------------------
def test_authors_yaml_loads_unchanged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = _write(tmp_path, AUTHORS_YAML)
    cfg = load_config(path, ["vpt_deep", "True"])

    assert cfg.vpt_deep is True
    assert cfg.vpt_shallow is False
    assert isinstance(cfg.weight_decay, float) and cfg.weight_decay == 0.0005
    assert cfg.DATA.NUM_L == 4
    assert cfg.w_con == 3.0
    assert cfg.backbone == "ViT-B/16"
    assert cfg.DATA.DATAPATH == "../datasets/cifar-100"
    assert cfg.output_dir == "out/cifar-100/N4"
    assert cfg.seed is None and cfg.gpu is None and cfg.resume is None
    # Every key this version implements carries the YAML's value.
    passive = set(INERT_KEYS)
    for key, value in _flatten(yaml.safe_load(AUTHORS_YAML)):
        if key in passive or key == "vpt_deep":
            continue
        expected = float(value) if key == "weight_decay" else value
        assert _get(cfg, key) == expected, key

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    listed = warnings[0].getMessage().split(": ", 1)[1].split(", ")
    assert sorted(listed) == sorted(
        ["dataset", "root", "resolution", "stride", "vpt_last", "lam_tokens", "mode"])


def test_no_warning_without_inert_keys(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    load_config(PEFT_CONFIGS[0], ["vpt_deep", "True"])
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# ---- shipped configs ----------------------------------------------------------------------
# name -> (DATA.NAME, NUMBER_CLASSES, NUM_U, BATCH_SIZE, w_con): docs/method.md §2 and §4.
RELEASED = {
    "cifar10_N1": ("CIFAR10", 10, 5000, 8, 1.0),
    "cifar10_N2": ("CIFAR10", 10, 5000, 16, 3.0),
    "cifar10_N4": ("CIFAR10", 10, 5000, 32, 3.0),
    "cifar100_N4": ("CIFAR100", 100, 500, 32, 3.0),
    "cifar100_N25": ("CIFAR100", 100, 500, 32, 3.0),
    "cifar100_N100": ("CIFAR100", 100, 500, 32, 3.0),
    "food101_N2": ("FOOD101", 101, 400, 32, 3.0),
    "food101_N4": ("FOOD101", 101, 400, 32, 3.0),
    "food101_N5": ("FOOD101", 101, 400, 32, 3.0),  # the released food.yaml
    "food101_N10": ("FOOD101", 101, 400, 32, 3.0),
}


# The other shipped paper configs, each checked by the tests of its part: Semi-Aves and
# ImageNet (tests/data/test_datasets_aves.py, test_datasets_imagenet.py), SemiKD's *_kd
# (tests/algorithms/test_semikd.py).
OTHER_PAPER_CONFIGS = {"semi_aves", "semi_aves_out", "imagenet_1p", "imagenet_10p"}


def test_every_released_setting_has_a_config():
    names = {os.path.splitext(os.path.basename(p))[0] for p in PEFT_CONFIGS}
    kd = {n for n in names if n.endswith("_kd")}
    assert names - kd == set(RELEASED) | OTHER_PAPER_CONFIGS
    assert {n[:-len("_kd")] for n in kd} <= set(RELEASED)


@pytest.mark.parametrize("path", [p for p in PEFT_CONFIGS
                                  if os.path.splitext(os.path.basename(p))[0] in RELEASED],
                         ids=lambda p: os.path.basename(p))
def test_shipped_config_has_released_hyperparameters(path):
    name = os.path.splitext(os.path.basename(path))[0]
    cfg = load_config(path, ["vpt_deep", "True"])
    data_name, n_classes, num_u, batch, w_con = RELEASED[name]
    assert cfg.DATA.NAME == data_name
    assert cfg.DATA.NUMBER_CLASSES == n_classes
    assert cfg.DATA.NUM_L == int(re.search(r"_N(\d+)$", name).group(1))
    assert cfg.DATA.NUM_U == num_u
    assert cfg.DATA.BATCH_SIZE == batch
    assert cfg.w_con == w_con
    assert cfg.DATA.MU_U == 1
    assert cfg.DATA.IMB_L == 1.0 and cfg.DATA.IMB_U == 1.0
    assert cfg.lr == 0.03 and cfg.momentum == 0.9 and cfg.weight_decay == 5e-4
    assert cfg.num_epochs == 30 and cfg.total_steps == 500
    assert cfg.th == 0.7 and cfg.th_min == 0.0
    assert cfg.alpha == 8.0 and cfg.smoothing == 0.5
    assert cfg.vpt_len == 50
    assert cfg.prec == "fp16"
    assert cfg.vpt_deep is True


# ---- defaults ---------------------------------------------------------------------------
def test_defaults_are_the_released_values():
    cfg = get_cfg_defaults()
    assert cfg.th == 0.7
    assert cfg.alpha == 8.0
    assert cfg.w_con == 3.0
    assert cfg.smoothing == 0.5
    assert cfg.lr == 0.03
    assert cfg.momentum == 0.9
    assert cfg.weight_decay == 5e-4
    assert cfg.num_epochs == 30
    assert cfg.total_steps == 500
    assert cfg.vpt_len == 50
    assert cfg.bms_form == "released"
    assert cfg.th_min == 0.0
    assert cfg.DATA.BATCH_SIZE == 32 and cfg.DATA.MU_U == 2  # released config.py's mu


def test_defaults_are_a_fresh_copy():
    a = get_cfg_defaults()
    a.lr = 1.0
    a.DATA.NUM_L = 99
    b = get_cfg_defaults()
    assert b.lr == 0.03 and b.DATA.NUM_L == 4


def test_no_file_no_overrides_gives_defaults():
    cfg = load_config()
    assert cfg.dump() == get_cfg_defaults().dump()


def test_every_key_is_declared_once_with_a_one_line_comment():
    """One way to declare a key: the core's in finessl/config.py and the plug-ins' all go
    through declare(), so the tree and the declarations are the same set of keys."""
    declared = declared_keys()
    assert set(declared) == set(all_keys(get_cfg_defaults()))
    assert set(CORE_KEYS) < set(declared) and "vpt_deep" not in CORE_KEYS
    uncommented = [k for k, (_, comment) in declared.items()
                   if not comment.strip() or "\n" in comment]
    assert uncommented == []
    source = open(os.path.join(REPO, "finessl", "config.py")).read()
    assert not re.search(r"^_C\.\w+ = ", source, re.M)  # no key set outside declare()


def test_core_and_plug_in_keys_are_checked_the_same_way(forget_plugins):
    """A core key's range (DATA.NUM_L), choices (prec) and None types (seed) are
    declarations, read by the same code as a plug-in key's."""
    assert KEYS["DATA.NUM_L"].check is positive and KEYS["lora_dim"].check is positive
    assert KEYS["prec"].choices == ("fp16", "fp32", "amp", "bf16")
    assert KEYS["seed"].types == (int,)
    declare("TOY.SIDE", 3, "a toy key", check=positive, choices=(1, 2, 3))
    assert load_config(None, ["TOY.SIDE", "2"]).TOY.SIDE == 2
    assert _error(opts=["TOY.SIDE", "4"]) == "TOY.SIDE: 4 is not one of 1, 2, 3 (command line)"


def test_model_keys_are_derived_from_the_declarations(forget_plugins):
    keys = model_keys()
    assert {"backbone", "DATA.NAME", "partial", "vpt_len", "lora_dim", "adapter_dim",
            "ffn_num", "ln_opt", "ffn_opt", "vpt_deep", "lora", "bn_tuning"} <= set(keys)
    assert "stu_vpt_len" not in keys and "lr" not in keys
    declare("toy_width", 4, "a toy strategy's width", shapes_model=True)
    assert model_keys()[-1] == "toy_width"


def test_vpt_deep_with_vpt_shallow_is_the_vpt_plug_in_s_cross_check():
    from finessl.models import peft_vpt
    assert peft_vpt._one_prompt_depth in CROSS_CHECKS
    assert _error(opts=["vpt_deep", "True", "vpt_shallow", "True"]) == \
        "vpt_deep and vpt_shallow are both True: choose one"


# ---- user mistakes ------------------------------------------------------------------------
def _error(cfg_file=None, opts=None) -> str:
    with pytest.raises(UserError) as exc:
        load_config(cfg_file, opts)
    return str(exc.value)


def test_unknown_key_suggests_the_close_one():
    msg = _error(opts=["vpt_dep", "True"])
    assert "vpt_dep" in msg and "did you mean 'vpt_deep'" in msg


def test_unknown_nested_key_suggests_the_close_one():
    msg = _error(opts=["DATA.NUM_LL", "4"])
    assert "DATA.NUM_LL" in msg and "did you mean 'DATA.NUM_L'" in msg


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = _write(tmp_path, "vpt_dep: True\n")
    msg = _error(path)
    assert "vpt_dep" in msg and path in msg


@pytest.mark.parametrize("key,value", [("lr", "abc"), ("DATA.NUM_L", "2.5"),
                                       ("vpt_deep", "3"), ("seed", "abc"), ("gpu", "True")])
def test_wrong_type_names_the_key(key, value):
    msg = _error(opts=[key, value])
    assert msg.startswith(f"{key}:")
    assert value in msg


def test_bad_choice_lists_the_choices():
    msg = _error(opts=["prec", "fp8"])
    assert "prec" in msg and "fp8" in msg
    for choice in ("fp16", "fp32", "amp"):
        assert choice in msg


def test_odd_number_of_overrides():
    msg = _error(opts=["vpt_deep", "True", "lr"])
    assert "KEY VALUE" in msg and "'lr'" in msg


def test_missing_file_is_named(tmp_path):
    path = str(tmp_path / "nope.yaml")
    assert path in _error(path)


def test_invalid_yaml_is_named(tmp_path):
    path = _write(tmp_path, "lr: [0.1, 0.2\nth: 0.5\n")
    msg = _error(path)
    assert path in msg and "YAML" in msg


def test_non_mapping_yaml_is_named(tmp_path):
    path = _write(tmp_path, "- lr\n- th\n")
    msg = _error(path)
    assert path in msg and "mapping" in msg


def test_empty_yaml_gives_defaults(tmp_path):
    path = _write(tmp_path, "")
    cfg = load_config(path)
    assert cfg.setting == os.path.splitext(os.path.basename(path))[0]  # the file's name
    cfg.defrost()
    cfg.setting = ""
    assert cfg.dump() == get_cfg_defaults().dump()


@pytest.mark.parametrize("opts,key", [
    (["th", "1.5"], "th"),
    (["th_min", "-0.1"], "th_min"),
    (["DATA.IMB_L", "0.5"], "DATA.IMB_L"),
    (["DATA.IMB_L", "-10"], "DATA.IMB_L"),  # only the unlabeled set can be reversed
    (["DATA.IMB_U", "-0.5"], "DATA.IMB_U"),
    (["DATA.NUM_L", "0"], "DATA.NUM_L"),
    (["lr", "-0.1"], "lr"),
    (["smoothing", "1.0"], "smoothing"),
    (["vpt_deep", "True", "vpt_shallow", "True"], "vpt_shallow"),
    (["eval_only", "True"], "model_dir"),
    (["template", "a photo"], "template"),
])
def test_invalid_values_name_the_key(opts, key):
    assert key in _error(opts=opts)


def test_boundary_values_are_valid():
    cfg = load_config(None, ["th", "1.0", "th_min", "0.0", "DATA.IMB_L", "1", "smoothing", "0",
                             "eval_only", "True", "model_dir", "out/x"])
    assert cfg.th == 1.0 and cfg.DATA.IMB_L == 1.0 and cfg.smoothing == 0.0
    assert cfg.model_dir == "out/x"


def test_fine_tuning_switches_take_the_authors_keys():
    cfg = load_config(None, ["lora", "True", "lora_dim", "16", "partial", "6"])
    assert cfg.lora is True and cfg.lora_dim == 16 and cfg.partial == 6
    assert "partial: the number of last blocks must be positive" in _error(opts=["partial", "0"])
    assert "lora_dim: must be positive" in _error(opts=["lora_dim", "0"])


def test_int_accepted_where_float_expected():
    cfg = load_config(None, ["lr", "1", "th", "1"])
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0
    assert isinstance(cfg.th, float) and cfg.th == 1.0


def test_overrides_beat_the_file(tmp_path):
    path = _write(tmp_path, "lr: 0.1\nDATA:\n  NUM_L: 8\n")
    cfg = load_config(path, ["lr", "0.2"])
    assert cfg.lr == 0.2 and cfg.DATA.NUM_L == 8


def test_returned_config_is_frozen():
    cfg = load_config(None, ["vpt_deep", "True"])
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0
    with pytest.raises(AttributeError):
        cfg.DATA.NUM_L = 8
    assert cfg.lr == 0.03 and cfg.DATA.NUM_L == 4
