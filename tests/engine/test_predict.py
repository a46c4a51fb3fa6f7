"""A tiny run through ``main.py`` on an ImageFolder (unlabeled targets -1), then
``main.py predict`` on a folder with bad files: one CSV row per readable image."""
from __future__ import annotations

import csv
import os
import shutil

import pytest
import torch

from conftest import main_inprocess, tiny_args
from fakedata import NOT_AN_IMAGE, TRUNCATED, write_image_folder
from finessl.engine.predict import predict
from finessl.errors import UserError

CLASSNAMES = ["apple_pie", "bus", "cat"]  # the folder names, not the prompts

pytestmark = pytest.mark.slow  # every test needs the trained run of the fixture (~5 s)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """(dataset root, run folder, stderr) of a finished 1-epoch FineSSL run."""
    root = write_image_folder(str(tmp_path_factory.mktemp("images")))
    out = str(tmp_path_factory.mktemp("run") / "tiny")
    args = tiny_args(root, out, **{"DATA.NAME": "ImageFolder", "num_epochs": 1,
                                   "total_steps": 3, "DATA.BATCH_SIZE": 4})
    code, _, err = main_inprocess(args, rasterise=False)
    assert code == 0, err
    return root, out, err


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_on_image_folder_completes(folder_run):
    root, out, err = folder_run
    for name in ("config.yaml", "split.json", "checkpoint_last.pt", "results.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.path.join(root, TRUNCATED) in err and os.path.join(root, NOT_AN_IMAGE) in err
    state = torch.load(os.path.join(out, "checkpoint_last.pt"), weights_only=False)
    assert len(state["history"]) == 1 and 0.0 <= state["history"][0]["top1"] <= 1.0


def test_predict_writes_one_row_per_readable_image(folder_run, tmp_path):
    root, out, _ = folder_run
    images = os.path.join(root, "unlabeled")
    output = str(tmp_path / "predictions.csv")
    code, _, err = main_inprocess(["predict", "--model-dir", out, "--images", images,
                             "--output", output, "num_workers", "0"])
    assert code == 0, err
    rows = read_csv(output)
    assert list(rows[0]) == ["path", "class", "confidence"]
    readable = [os.path.relpath(os.path.join(d, f), images)
                for d, _, files in os.walk(images) for f in files
                if not f.startswith(".") and not f.endswith((".txt", "notes.png"))]
    assert sorted(r["path"] for r in rows) == sorted(readable)
    assert all(r["class"] in CLASSNAMES and 0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    assert os.path.join(root, NOT_AN_IMAGE) in err  # reported by path, then skipped
    assert os.listdir(tmp_path) == ["predictions.csv"]  # written atomically


def test_predict_takes_only_runtime_keys_from_the_command_line(folder_run, tmp_path, caplog):
    """Training keys given on top keep the run's values (one warning names them), so
    the predictions are those of the run as trained."""
    root, out, _ = folder_run
    images = os.path.join(root, "test")
    plain, changed = str(tmp_path / "plain.csv"), str(tmp_path / "changed.csv")
    predict(out, images, plain, opts=["num_workers", "0"])
    with caplog.at_level("WARNING"):
        predict(out, images, changed, opts=["num_workers", "0", "vpt_len", "7", "lr", "0.5"])
    assert read_csv(changed) == read_csv(plain)
    warned = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    ignored = warned[0].split(" ignored")[0] if len(warned) == 1 else ""
    assert "vpt_len 7" in ignored and "lr 0.5" in ignored
    assert "num_workers" not in ignored  # a runtime key applies


def test_predict_needs_no_training_data_when_the_checkpoint_names_the_classes(folder_run,
                                                                              tmp_path):
    root, out, _ = folder_run
    run = str(tmp_path / "run")
    shutil.copytree(out, run)
    path = os.path.join(run, "checkpoint_last.pt")
    state = torch.load(path, weights_only=False)
    state["classnames"] = ["x", "y", "z"]
    torch.save(state, path)
    images = str(tmp_path / "new")
    shutil.copytree(os.path.join(root, "test"), images)
    output = str(tmp_path / "out.csv")
    result = predict(run, images, output, opts=["DATA.DATAPATH", str(tmp_path / "gone"),
                                                "num_workers", "0"])
    assert result == {"predicted": 9, "skipped": 0, "output": output}
    rows = read_csv(output)
    assert len(rows) == 9 and {r["class"] for r in rows} <= {"x", "y", "z"}


def test_predict_mistakes_are_user_errors(folder_run, tmp_path):
    _, out, _ = folder_run
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(UserError, match="config.yaml"):
        predict(str(tmp_path / "nothing"), str(tmp_path), "x.csv")
    with pytest.raises(UserError, match="no image files"):
        predict(out, os.path.join(out, "tensorboard"), "x.csv")
    with pytest.raises(UserError, match="not a folder"):
        predict(out, str(tmp_path / "missing"), "x.csv")


def test_predict_help_documents_the_command():
    code, out, _ = main_inprocess(["predict", "--help"])
    assert code == 0
    for needle in ("--model-dir", "--images", "--output", "path", "class", "confidence"):
        assert needle in out
