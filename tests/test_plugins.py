"""A new PEFT method and a new algorithm are one file each: copied into a temporary
package, named by the ``plugins`` key, trained through main.py (the dataset plug-in's
test is in test_datasets_plugins.py). The files are tests/assets/plugins/, shown in
docs/extending.md."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from conftest import REPO, main_inprocess, tiny_args
from finessl.config_load import load_config
from finessl.errors import UserError
from finessl.models.methods import PEFT_METHODS

ASSETS = os.path.join(REPO, "tests", "assets", "plugins")


@pytest.fixture
def toy_package(tmp_path):
    """tmp/toyplugins/ holding the two plug-in files, importable as a package."""
    package = tmp_path / "pkgs" / "toyplugins"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("toy_peft.py", "toy_match.py"):
        shutil.copy(os.path.join(ASSETS, name), package / name)
    return str(tmp_path / "pkgs")


@pytest.fixture
def train(toy_package, cifar_root, tmp_path, monkeypatch, forget_plugins):
    """``train(**opts)``: a run through ``main.main`` in this process, the toy package on
    sys.path (the plug-ins it imports are forgotten after the test); (run folder,
    results.json)."""
    monkeypatch.syspath_prepend(toy_package)

    def run(**opts):
        out = str(tmp_path / "run")
        code, stdout, stderr = main_inprocess(tiny_args(cifar_root, out, **opts))
        assert code == 0, stderr[-2000:]
        with open(os.path.join(out, "results.json")) as f:
            return out, json.load(f)
    return run


@pytest.mark.slow  # trains 3 short epochs
def test_a_peft_method_in_one_file_trains_through_main(train):
    out, result = train(plugins="toyplugins.toy_peft", vpt_deep=False, mlp_shift=True,
                        mlp_shift_init=0.01)
    assert result["last_top1"] >= 0.2  # 10 classes: chance is 0.1
    state = torch.load(os.path.join(out, "checkpoint_last.pt"), weights_only=True)
    shifts = [k for k in state["model"] if k.startswith("backbone.peft.0.blocks.")]
    assert len(shifts) == 2  # one per block of the tiny ViT
    assert all(not torch.allclose(state["model"][k], torch.tensor(0.01)) for k in shifts)
    with open(os.path.join(out, "config.yaml")) as f:
        assert "toyplugins.toy_peft" in f.read()  # the run records what it loaded


@pytest.mark.slow  # trains 3 short epochs
def test_an_algorithm_in_one_file_trains_through_main(train):
    _, result = train(plugins="toyplugins.toy_match", algorithm="toymatch",
                      **{"TOYMATCH.FLOOR": 0.6})
    assert result["algorithm"] == "toymatch" and result["last_top1"] >= 0.2


def test_plugin_keys_and_names_are_checked_like_built_in_ones(cifar_root, tmp_path,
                                                              forget_plugins):
    path = os.path.join(ASSETS, "toy_peft.py")
    cfg = load_config(None, ["plugins", path, "mlp_shift", "True"])
    assert cfg.mlp_shift is True and cfg.mlp_shift_init == 0.0
    with pytest.raises(UserError, match="^mlp_shift_init: expected float"):
        load_config(None, ["plugins", path, "mlp_shift_init", "big"])
    with pytest.raises(UserError, match="^plugins: no file"):
        load_config(None, ["plugins", str(tmp_path / "missing.py")])
    with pytest.raises(UserError, match="^plugins: cannot import 'nosuchpackage.mod'"):
        load_config(None, ["plugins", "nosuchpackage.mod"])
    from finessl.models import build_model
    cfg = load_config(None, ["plugins", path, "mlp_shift", "True", "backbone",
                             "timm:test_efficientnet", "pretrained", "none", "vpt_deep", "False"])
    with pytest.raises(UserError, match="^mlp_shift: a ViT-only strategy; timm:test_efficientnet"):
        build_model(cfg, ["a", "b"], torch.device("cpu"), half=False)


def test_a_plugin_imported_in_a_test_is_forgotten_after_it(tmp_path):
    """The plug-in of the test above (forget_plugins) left no key behind: a later
    in-process run's config.yaml must load in a fresh main.py."""
    assert "mlp_shift" not in load_config(None, []) and "mlp_shift" not in PEFT_METHODS


def test_docs_show_the_plugin_files_as_they_are():
    """docs/extending.md shows the toy plug-ins' code exactly (their docstrings aside)."""
    import ast
    import re
    with open(os.path.join(REPO, "docs", "extending.md")) as f:
        blocks = [b.strip() for b in re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)]
    for name in ("toy_peft.py", "toy_match.py"):
        source = open(os.path.join(ASSETS, name)).read()
        docstring = ast.get_docstring(ast.parse(source), clean=False)
        body = source.split(f'"""{docstring}"""', 1)[1].strip()
        assert body in blocks, name
