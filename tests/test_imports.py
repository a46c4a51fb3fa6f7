"""The package's floors run one way: errors / io / logs (and the other leaf helpers) ->
config -> data, models -> algorithms -> engine -> report -> main.py. A
module never imports from a floor above its own, data and models do not import each
other, and no two modules import each other in a circle, whether the import sits at
the top of the file or inside a function."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, "finessl")
FLOORS = {  # the first dotted part below finessl -> floor
    "errors": 0, "io": 0, "logs": 0, "registry": 0, "distributed": 0, "metrics": 0, "selection": 0,
    "config": 1, "config_values": 1, "config_load": 1, "data": 2, "models": 2, "losses": 2, "algorithms": 3,
    "engine": 5, "report": 6,
}


def modules() -> dict[str, str]:
    """dotted module name -> file path, for every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), REPO)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found[".".join(rel)] = os.path.join(folder, name)
    return found


def imports_of(path: str, known: set[str]) -> set[str]:
    """The package modules a file imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "finessl":
                out.add(name)
    return out


def floor(module: str) -> int:
    return FLOORS[module.split(".")[1]]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {m: imports_of(path, set(found)) - {m} for m, path in found.items() if m != "finessl"}


def test_every_module_has_a_floor():
    assert all(m.split(".")[1] in FLOORS for m in graph())


def test_no_module_imports_from_a_floor_above_or_across_data_and_models():
    upward = [(m, i) for m, deps in graph().items() for i in deps if floor(i) > floor(m)]
    assert upward == []
    across = [(m, i) for m, deps in graph().items() for i in deps
              if {m.split(".")[1], i.split(".")[1]} == {"data", "models"}]
    assert across == []


def test_no_import_cycles():
    edges = graph()
    for m in edges:  # a package's __init__ may gather its own modules
        if os.path.basename(modules()[m]) == "__init__.py":
            edges[m] = {i for i in edges[m] if not i.startswith(m + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for i in sorted(edges.get(m, ())):
            if state.get(i) == 1:
                cycles.append(stack[stack.index(i):] + [i])
            elif i not in state:
                visit(i, stack + [i])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_test_sees_an_upward_import(tmp_path):
    """The checker is not vacuous: config importing an algorithm is caught."""
    path = tmp_path / "config.py"
    path.write_text("from finessl.algorithms.base import ALGORITHMS\n")
    deps = imports_of(str(path), set(modules()))
    assert "finessl.algorithms.base" in deps
    assert any(floor(i) > floor("finessl.config") for i in deps)


HEAVY = {"open_clip", "timm", "tensorboard", "matplotlib"}


@pytest.mark.slow  # the point is a fresh process's imports
def test_a_config_error_imports_no_model_or_logging_library():
    """A mistyped key is answered in one line without importing open_clip, timm,
    tensorboard or matplotlib (torch is fine): the plug-ins' key declarations are cheap
    to import, the libraries come with the models built. The trainer itself imports no
    plotting library. The check is not vacuous: in the same process, building a model's
    name lookup then does import open_clip."""
    code = ("import sys, main\n"
            "rc = main.main(['--cfg', 'configs/demo/vit_tiny.yaml', 'no_such_key', '1'])\n"
            f"print(rc, sorted(set({sorted(HEAVY)!r}) & set(sys.modules)))\n"
            # the training loop draws no figure: matplotlib comes with the report alone
            "import finessl.engine.trainer\nprint('matplotlib' in sys.modules)\n"
            "from finessl.models.clip import resolve_model_name\n"
            "resolve_model_name('RN50')\nprint('open_clip' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.split() == ["2", "[]", "False", "True"], \
        proc.stdout + proc.stderr[-2000:]
    assert proc.stderr.strip() == "error: unknown config key 'no_such_key' (command line)"
