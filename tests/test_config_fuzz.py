"""Property-based: whatever a user types, the outcome is a loaded config or one
:class:`UserError` of one line, never another exception. Random values of random
types for every config key (as ``KEY VALUE`` pairs and as YAML files), and random
malformed run folders handed to ``resume``, ``eval_only`` and ``predict``.
In-process, a few seconds in all."""
from __future__ import annotations

import io
import os
import tempfile
from unittest import mock

import pytest
import torch
import yaml
from hypothesis import HealthCheck, configuration, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import tiny_args
from finessl.config import INERT_KEYS, all_keys, get_cfg_defaults
from finessl.engine import run, rundir
from finessl.engine.checkpoint import LAST, RESUME_KEYS
from finessl.engine.predict import predict
from finessl.errors import UserError
from finessl.config_load import import_builtin_plugins, load_config

import_builtin_plugins()  # every built-in plug-in registered, its config keys in the tree

# Hypothesis keeps caches in ./.hypothesis unless told otherwise: not in the checkout.
configuration.set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "finessl-hypothesis"))
KEYS = all_keys(get_cfg_defaults())
def fuzz(examples: int):
    """In-process and fast: no deadline, no example database written to the checkout."""
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

# Texts that have broken parsers before: literals of every kind, numbers out of range,
# unbalanced brackets, line breaks of every kind, NUL, format strings, real names.
ODD_TEXTS = [
    "", " ", "None", "null", "True", "False", "0", "-1", "-0.0", "1e400", "-1e400", "nan",
    "inf", "1j", "[]", "[1, 2]", "['a', 'b']", "()", "{}", "{'a': 1}", "{1, 2}", "(", "[",
    "'", '"', "\\", "\n", "a\nb", "a\rb", "\t", "\x00", "a\x00b", "\x85", "\u2028", "\x0b",
    "{0}", "{x}{}", "{}{}", "a photo of {}.", "9" * 5000, "1" + "0" * 400, "-" * 3000 + "1",
    "(" * 300, "[" * 300 + "]" * 300, "b'x'", "...", "lambda: 1", "__import__('os')",
    "ViT-B/16", "CIFAR10", "cifar-10", "fp16", "amp", "ImageFolder", "finessl", ".", "/",
    "out/x", "2**70", str(2**63), str(-2**63 - 1), "0x10", "1_000", "+5", "0.5", "-0.5",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2**80, 2**80), st.floats(),
    st.text(max_size=12), st.binary(max_size=8),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.tuples(SCALARS),
                   st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
                   st.sets(st.integers(), max_size=2), st.complex_numbers())
# What reaches load_config from a command line: text, however it was made.
TEXTS = st.one_of(VALUES.map(repr), VALUES.map(str), st.sampled_from(ODD_TEXTS), st.text())
# plugins imports what it names: random text, but never a module that exists.
PLUGIN_TEXTS = st.one_of(
    st.sampled_from(["", " ", ".", "..x", "x.", "1abc", "a b", "[]", "[1]", "None", "5",
                     "nonexistent_fuzz_module", "nonexistent_fuzz_pkg.mod", "['nonexistent_x']",
                     "/nonexistent/fuzz.py", "fuzz missing.py", "a\nb.py", "\x00.py"]),
    st.text(max_size=12).map(lambda t: "nonexistent_fuzz_" + t),
    st.text(max_size=12).map(lambda t: os.path.join("/nonexistent", t + ".py")),
)


def text_for(key: str):
    return PLUGIN_TEXTS if key == "plugins" else TEXTS


PAIRS = st.lists(st.one_of(
    st.sampled_from(KEYS).flatmap(lambda k: st.tuples(st.just(k), text_for(k))),
    st.tuples(st.sampled_from(list(INERT_KEYS) + ["zero_shot"]), TEXTS),
    st.tuples(st.text(max_size=12).filter(lambda k: k != "plugins"), TEXTS),
), max_size=6)


def assert_one_line(error: UserError) -> None:
    message = str(error)
    assert message.strip(), "empty message"
    assert len(message.splitlines()) == 1 and "\n" not in message, message


def loads_or_one_line(cfg_file, opts) -> None:
    try:
        cfg = load_config(cfg_file, opts)
    except UserError as e:
        assert_one_line(e)
    else:
        assert cfg.is_frozen()


# ---- KEY VALUE pairs ---------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
@fuzz(12)
@given(data=st.data())
def test_every_key_takes_any_value_or_says_why_in_one_line(key, data):
    loads_or_one_line(None, [key, data.draw(text_for(key))])


@fuzz(200)
@given(pairs=PAIRS, drop_last=st.booleans())
def test_any_pairs_load_or_fail_in_one_line(pairs, drop_last):
    opts = [x for kv in pairs for x in kv]
    loads_or_one_line(None, opts[:-1] if drop_last and opts else opts)


# ---- YAML files --------------------------------------------------------------------------
TOP_NAMES = sorted({k.split(".")[0] for k in KEYS if k != "plugins"})
YAML_TREES = st.recursive(
    SCALARS.filter(lambda v: not isinstance(v, bytes)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.one_of(st.sampled_from(TOP_NAMES + ["NUM_L", "BATCH_SIZE"]), st.text(max_size=6),
                  st.integers()), children, max_size=4),
    max_leaves=12)


def _yaml_bytes(tree) -> bytes:
    try:
        return yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, UnicodeError):
        return repr(tree).encode("utf-8", "surrogatepass")


FILES = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(
    lambda t: t.encode("utf-8", "surrogatepass")), YAML_TREES.map(_yaml_bytes),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"[", b"a: [", b"- 1\n- 2\n",
                     b"lr: 1e400\n", b"lr: " + b"9" * 5000 + b"\n", b"[" * 200,
                     b"DATA: 5\n", b"DATA:\n  NUM_L: x\n", b"? [a]\n: 1\n",
                     b"&a [*a]\n", b"!!python/object:os.system {}\n", b"\x00"]))


@fuzz(100)
@given(content=FILES)
def test_any_yaml_file_loads_or_fails_in_one_line(content):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cfg.yaml")
        with open(path, "wb") as f:
            f.write(content)
        loads_or_one_line(path, [])


# ---- malformed run folders ---------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_config(cifar_root, tmp_path_factory) -> str:
    """The text of a config.yaml a fresh tiny run writes."""
    folder = str(tmp_path_factory.mktemp("valid"))
    rundir.save_run_config(load_config(None, tiny_args(cifar_root, folder)), 1, folder)
    return open(os.path.join(folder, "config.yaml")).read()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "a.png")
    return str(folder)


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


FULL_STATE = _torch_bytes({"epoch": 1, "global_step": 3, "seed": 1, "model": {},
                           "optimizer": {}, "history": []})  # cut short: a truncated save
CONFIGS = st.one_of(
    st.sampled_from([("missing", None), ("folder", None), ("valid", None)]),
    FILES.map(lambda b: ("bytes", b)),
    st.sampled_from([k for k in KEYS if k not in ("plugins", "resume", "output_dir")]).flatmap(
        lambda k: st.tuples(st.just(k), TEXTS)).map(lambda kv: ("changed", kv)),
)
CHECKPOINTS = st.one_of(
    st.sampled_from([("missing", None), ("folder", None), ("bytes", b"")]),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.integers(1, len(FULL_STATE) - 1).map(lambda n: ("bytes", FULL_STATE[:n])),
    st.sampled_from([5, "text", [1, 2], None, {"seed": 1}, {"model": {}}, {"epoch": 1},
                     {1: 2}, torch.zeros(3)]).map(lambda obj: ("bytes", _torch_bytes(obj))),
)


def _set_key(text: str, key: str, value: str) -> str:
    data = yaml.safe_load(text)
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return yaml.safe_dump(data, allow_unicode=True)


def _make_run(folder: str, config, checkpoint, valid_config: str) -> str:
    run_dir = os.path.join(folder, "run")
    os.makedirs(run_dir)
    kind, value = config
    path = os.path.join(run_dir, "config.yaml")
    if kind == "folder":
        os.makedirs(path)
    elif kind == "valid":
        open(path, "w").write(valid_config)
    elif kind == "changed":
        open(path, "w", encoding="utf-8", errors="surrogatepass").write(
            _set_key(valid_config, *value))
    elif kind == "bytes":
        open(path, "wb").write(value)
    kind, value = checkpoint
    path = os.path.join(run_dir, LAST)
    if kind == "folder":
        os.makedirs(path)
    elif kind == "bytes":
        open(path, "wb").write(value)
    return run_dir


def _use(mode: str, run_dir: str, folder: str, cifar_root: str, images: str) -> None:
    """What main.py does with the folder: resume it, evaluate it, or predict with it."""
    if mode == "predict":
        predict(run_dir, images, os.path.join(folder, "out.csv"), None, ["num_workers", "0"])
        return
    if mode == "resume":
        cfg = load_config(None, ["resume", run_dir])
    else:
        cfg = load_config(None, tiny_args(cifar_root, os.path.join(folder, "out"))
                          + ["eval_only", "True", "model_dir", run_dir])
    with mock.patch.object(run, "setup_logging", lambda *a, **k: None):  # no log.txt handlers
        run.evaluate(cfg) if cfg.eval_only else run.train(cfg)


@fuzz(100)
@given(mode=st.sampled_from(["resume", "eval_only", "predict"]), config=CONFIGS,
       checkpoint=CHECKPOINTS)
def test_a_malformed_run_folder_is_one_line(mode, config, checkpoint, valid_config, images,
                                            cifar_root):
    with tempfile.TemporaryDirectory() as folder:
        run_dir = _make_run(folder, config, checkpoint, valid_config)
        with pytest.raises(UserError) as exc:
            _use(mode, run_dir, folder, cifar_root, images)
        assert_one_line(exc.value)
        assert not os.path.exists(os.path.join(run_dir, rundir.LOCK))  # released, removed


# Every key a resume reads, each holding garbage: the trainer is built (a tiny one, on
# the fake CIFAR-10) and loading the state must fail in one line too.
GARBAGE = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4),
                    st.lists(st.integers(0, 3), max_size=3),
                    st.dictionaries(st.sampled_from(["head.weight", "state", "param_groups",
                                                     "x", "python", "torch"]),
                                    st.one_of(st.integers(0, 3), st.just(torch.zeros(2))),
                                    max_size=2),
                    st.just(torch.zeros(3)))
FULL_GARBAGE = st.fixed_dictionaries({k: GARBAGE for k in RESUME_KEYS + ("scaler", "classnames")})


@fuzz(25)
@given(mode=st.sampled_from(["resume", "eval_only", "predict"]), state=FULL_GARBAGE,
       seed=st.one_of(st.just(1), GARBAGE))
def test_a_checkpoint_of_garbage_values_is_one_line(mode, state, seed, valid_config, images,
                                                    cifar_root):
    state["seed"] = seed
    with tempfile.TemporaryDirectory() as folder:
        run_dir = _make_run(folder, ("valid", None), ("bytes", _torch_bytes(state)), valid_config)
        with pytest.raises(UserError) as exc:
            _use(mode, run_dir, folder, cifar_root, images)
        assert_one_line(exc.value)
