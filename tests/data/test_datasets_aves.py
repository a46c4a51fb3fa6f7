"""Semi-Aves (``DATA.NAME Semi_Aves``) in the FGVC7 release's layout, generated: the
three sets, labels against files, out-of-class data (``DATA.out_ulab``, true label -2),
the pairings, missing files, and the released YAML through main.py."""
from __future__ import annotations

import json
import logging
import os

import pytest

from conftest import REPO, TINY_VIT, main_inprocess
from fakedata import write_fake_semi_aves
from finessl.config import INERT_KEYS
from finessl.data import datasets, loaders
from finessl.data.semi_aves import FILES
from helpers import one_line_error, released_yaml
from finessl.config_load import load_config

LABELED, U_IN, U_OUT, TEST = 2, 1, 30, 1  # per class, per class, in all, per class

# The authors' released configs/peft/semi_aves.yaml (Gank0078/FineSSL), verbatim.
AUTHORS_SEMI_AVES = released_yaml("semi_aves.yaml")


@pytest.fixture(scope="module")
def aves(tmp_path_factory):
    return write_fake_semi_aves(str(tmp_path_factory.mktemp("aves")), 200, LABELED, U_IN,
                                U_OUT, TEST)


def load(root, *opts):
    cfg = load_config(None, ["DATA.NAME", "Semi_Aves", *map(str, opts)])
    return datasets.load_dataset("Semi_Aves", root, False, cfg)


def file_class(path):
    """The class a generated file name holds (``l_train/<k>_<j>.jpg``); -2 for ``x_<j>``."""
    head = os.path.basename(path).split("_")[0]
    return -2 if head == "x" else int(head)


def test_sets_classes_and_labels_match_the_files(aves):
    raw = load(aves)
    assert len(raw.classnames) == 200 and raw.classnames[7] == "Genus species7"
    labeled, unlabeled = raw.fixed_split
    assert (len(labeled), len(unlabeled), raw.num_test) == (200 * LABELED, 200 * U_IN, 200 * TEST)
    files = raw.train_images.paths
    assert [raw.train_targets[i] for i in labeled] == [file_class(files[i]) for i in labeled]
    assert all(files[i].startswith(os.path.join(aves, "l_train", "")) for i in labeled)
    # unlabeled in-class: category_id kept as the diagnostic true label, paired by image_id
    assert [raw.train_targets[i] for i in unlabeled] == [file_class(files[i]) for i in unlabeled]
    assert not {files[i] for i in labeled} & {files[i] for i in unlabeled}  # as released
    assert raw.test_targets == [file_class(p) for p in raw.test_images.paths]
    assert raw.mean == (0.485, 0.456, 0.406) and raw.std == (0.229, 0.224, 0.225)
    assert raw.train_images[labeled[0]].size == (16, 16)


def test_out_ulab_adds_the_out_of_class_images_as_minus_two(aves, tmp_path):
    raw = load(aves, "DATA.out_ulab", True)
    labeled, unlabeled = raw.fixed_split
    assert len(labeled) == 200 * LABELED and len(unlabeled) == 200 * U_IN + U_OUT
    truth = [raw.train_targets[i] for i in unlabeled]
    assert truth.count(-2) == U_OUT and min(t for t in truth if t != -2) == 0
    assert all(file_class(raw.train_images.paths[i]) == -2
               for i in unlabeled if raw.train_targets[i] == -2)
    cfg = load_config(None, ["DATA.NAME", "Semi_Aves", "DATA.DATAPATH", aves,
                             "DATA.out_ulab", "True", "DATA.NUMBER_CLASSES", "200"])
    bundle = loaders.build_data(cfg, 32, str(tmp_path))
    assert int((bundle.unlabeled_targets == -2).sum()) == U_OUT
    split = json.load(open(tmp_path / "split.json"))
    assert split["unlabeled_per_class"][-1] == U_OUT  # the extra last bin
    assert split["meta"]["out_of_class"] == U_OUT and split["meta"]["out_ulab"] is True


def test_without_ids_images_and_labels_pair_by_position_as_released(tmp_path):
    root = write_fake_semi_aves(str(tmp_path), 5, 3, 2, 4, 2, with_ids=False)
    raw = load(root, "DATA.out_ulab", True)
    files = raw.train_images.paths
    assert raw.train_targets == [file_class(p) for p in files]
    assert raw.test_targets == [file_class(p) for p in raw.test_images.paths]


@pytest.mark.parametrize("key", ["labeled", "in", "out", "test", "solution", "names"])
def test_a_missing_file_is_one_line_naming_it_and_the_release(tmp_path, key):
    root = write_fake_semi_aves(str(tmp_path), 3, 1, 1, 2, 1)
    missing = os.path.join(root, "annotation", FILES[key])
    os.remove(missing)
    if key == "out":  # only read with DATA.out_ulab True
        assert load(root).num_train == 6
    one_line_error(lambda: load(root, "DATA.out_ulab", True),
                   names=(missing, "FGVC7 Semi-Aves"))


def test_missing_images_and_bad_annotations_name_the_file(tmp_path):
    root = write_fake_semi_aves(str(tmp_path), 3, 1, 1, 2, 1)
    first = json.load(open(os.path.join(root, "annotation", FILES["labeled"])))["images"][0]
    os.remove(os.path.join(root, first["file_name"]))
    one_line_error(lambda: load(root),
                   names=(os.path.join(root, first["file_name"]), FILES["labeled"]))
    solution = os.path.join(root, "annotation", FILES["solution"])
    with open(solution, "a") as f:
        f.write("123,4\n")
    one_line_error(lambda: load(root), names=(solution, "4 rows", "3 images"))


def test_released_yaml_loads_unchanged_and_its_dead_keys_warn_once(tmp_path, caplog):
    path = tmp_path / "semi_aves.yaml"
    path.write_text(AUTHORS_SEMI_AVES)
    cfg = load_config(str(path))
    assert "DATA.out_ulab" not in INERT_KEYS and cfg.DATA.out_ulab is False
    assert (cfg.DATA.NAME, cfg.DATA.NUMBER_CLASSES, cfg.DATA.BATCH_SIZE, cfg.DATA.MU_U) == \
        ("Semi_Aves", 200, 32, 1)
    assert cfg.vpt_deep is True and cfg.vpt_len == 50 and cfg.gpu == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert sorted(warnings[0].split(": ", 1)[1].split(", ")) == sorted(
        ["dataset", "root", "resolution", "stride", "tau", "downsampling", "n_max",
         "test_ensemble", "mode"])


@pytest.mark.parametrize("name, out_ulab, top1", [("semi_aves", False, 67.25),
                                                  ("semi_aves_out", True, 61.12)])
def test_shipped_configs(name, out_ulab, top1):
    cfg = load_config(os.path.join(REPO, "configs", "peft", f"{name}.yaml"))
    assert (cfg.DATA.NAME, cfg.DATA.NUMBER_CLASSES, cfg.DATA.BATCH_SIZE, cfg.DATA.MU_U) == \
        ("Semi_Aves", 200, 32, 1)
    assert (cfg.DATA.out_ulab, cfg.paper_top1, cfg.vpt_deep, cfg.vpt_len) == \
        (out_ulab, top1, True, 50)
    assert (cfg.w_con, cfg.smoothing, cfg.alpha, cfg.th) == (3.0, 0.5, 8.0, 0.7)


@pytest.mark.slow
def test_released_yaml_trains_through_main_with_out_of_class_data(aves, tmp_path):
    path = tmp_path / "semi_aves.yaml"
    path.write_text(AUTHORS_SEMI_AVES)
    out = str(tmp_path / "run")
    code, _, err = main_inprocess([
        "--cfg", str(path), "DATA.DATAPATH", aves, "DATA.out_ulab", "True",
        "DATA.BATCH_SIZE", "8", "gpu", "None", "backbone", TINY_VIT, "pretrained", "none",
        "prec", "fp32", "vpt_len", "4", "num_epochs", "1", "total_steps", "3",
        "num_workers", "0", "seed", "1", "output_dir", out])
    assert code == 0, err
    result = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= result["last_top1"] <= 1.0
    split = json.load(open(os.path.join(out, "split.json")))
    assert len(split["labeled"]) == 200 * LABELED
    assert len(split["unlabeled"]) == 200 * U_IN + U_OUT
    assert split["unlabeled_per_class"][-1] == U_OUT
