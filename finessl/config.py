"""The one yacs defaults tree: every key FineSSL reads, with its meaning.

Key names are the authors' (Gank0078/FineSSL ``utils/config.py``), so a YAML written
for the released code loads unchanged. Defaults are the released settings of
docs/method.md §3-4 (the YAMLs under ``configs/peft/``), not the authors' code defaults.

Plug-ins (datasets, PEFT methods, backbones, algorithms) declare their own keys beside
their code with :func:`declare`; the tree gathers them when their modules are imported.

Loading goes through :func:`load_config`, which turns every mistake a user can make
(unknown key, wrong type, bad value) into a :class:`~finessl.errors.UserError`.
"""
from __future__ import annotations

import ast
import difflib
import logging
import math
import os
from typing import Callable

import yaml
from yacs.config import CfgNode as CN

from finessl.errors import UserError
from finessl.registry import CONFIG_REGISTRIES, import_plugin

log = logging.getLogger(__name__)

_C = CN()

# ---- data ---------------------------------------------------------------------------
_C.DATA = CN()
_C.DATA.NAME = "CIFAR100"  # dataset: a registered name: CIFAR10, CIFAR100, CIFAR100_OpenSet, FOOD101, Semi_Aves, semi_ImageNet, FashionMNIST, ImageFolder or your plug-in (datasets/README.md)
_C.DATA.DATAPATH = "datasets/cifar-100"  # folder holding the dataset files (see datasets/README.md)
_C.DATA.DOWNLOAD = True  # fetch the dataset when missing (only where a network exists)
_C.DATA.NUMBER_CLASSES = -1  # number of classes; -1 takes it from the dataset
_C.DATA.NUM_TEST = 0  # evaluate on the first N test images only (0 = the whole test set)
_C.DATA.NUM_L = 4  # labeled images per class (the largest class when IMB_L > 1)
_C.DATA.NUM_U = 500  # extra unlabeled images per class (the largest class when IMB_U > 1)
_C.DATA.IMB_L = 1.0  # imbalance ratio of the labeled set (1 = balanced)
_C.DATA.IMB_U = 1.0  # imbalance ratio of the unlabeled set (1 = balanced)
_C.DATA.MU_U = 2  # unlabeled batch = MU_U * BATCH_SIZE (the released default 2; the CIFAR, Food-101 and Semi-Aves configs set 1)
_C.DATA.BATCH_SIZE = 32  # labeled images per step
_C.DATA.UNLABELED = "dataset"  # unlabeled pool: 'dataset' = the released rule (CIFAR: first NUM_L+NUM_U per class; Food-101: the whole train split), 'num_u' = first NUM_L+NUM_U per class, 'all' = the whole train split
_C.DATA.NORMALIZE = "dataset"  # input mean/std: 'dataset' = the released per-dataset values (CIFAR's own, ImageNet's for Food-101), 'clip' = CLIP's
_C.DATA.REPLAY = True  # each epoch replays its loaders' first pass (the released itertools.cycle); False = fresh batches every step
_C.DATA.CUTOUT = 16  # strong views' Cutout: a fixed square of this many px (the released 16); -1 = FixMatch's random side up to half the image; 0 = none
_C.num_workers = 8  # dataloader worker processes

# ---- model --------------------------------------------------------------------------
_C.backbone = "ViT-B/16"  # open_clip model name; the authors' 'ViT-B/16' spelling is accepted
_C.pretrained = "openai"  # open_clip pretrained tag, a local weights file, or 'none' (random init)
_C.cache_dir = ""  # where open_clip / Hugging Face cache weights ('' = their default)
_C.prec = "fp16"  # fp16 (the released: backbone and trained tensors are fp16 parameters, no grad scaler), amp (fp32 weights, fp16 autocast + grad scaler), bf16 (fp32 weights, bf16 autocast) or fp32
_C.input_size = 0  # side of the views fed to the backbone; 0 = the model's own (224 for ViT-B/16)
# ---- fine-tuning strategy (docs/method.md §1; none switched on = linear probe of the heads)
_C.partial = None  # PEFT modules (and BitFit / finetune) only in the last K blocks (None = all)
_C.rand_init = True  # heads start random (True) or from CLIP text embeddings (False)
_C.template = "a photo of a {}."  # text prompt for the text-initialised heads
_C.grad_checkpointing = False  # recompute block activations in backward: less memory, ~1/3 more time
_C.compile = False  # torch.compile the backbone forward (fused kernels; first steps compile)

# ---- algorithm (docs/method.md §3, §5) ---------------------------------------------------
_C.algorithm = "finessl"  # finessl, supervised, zeroshot, pseudolabel, fixmatch, flexmatch, freematch, softmatch, debiaspl, semikd (a trained run teaches a student: KD True, docs/semikd.md)
_C.bms = None  # Balanced Margin Softmax on/off; None = on for finessl only
_C.dls = None  # Decoupled Label Smoothing (aux head) on/off; None = on for finessl only
_C.bms_fixed_alpha = False  # ablation: margin spread fixed to alpha instead of (max-min pace) * alpha
_C.bms_labeled = True  # BMS margins also on the supervised loss L_x (False: ablation)
_C.aux_detach = True  # aux head sees detached features (False: ablation, aux losses reach PEFT)
_C.th = 0.7  # confidence threshold zeta for pseudo-labels and the learning pace
_C.th_min = 0.0  # aux-confidence floor below which an unlabeled sample gets weight 0
_C.alpha = 8.0  # scale of the balanced margins
_C.bms_form = "released"  # margin m(k): 'released' (1-b)/(1+b)*spread or 'paper' (1-b)*spread
_C.w_con = 3.0  # weight gamma of the unlabeled loss L_u
_C.smoothing = 0.5  # label smoothing lambda of the aux head's unlabeled targets

# ---- optimisation (docs/method.md §4) ----------------------------------------------------
_C.num_epochs = 30  # epochs; the cosine schedule steps once per epoch
_C.total_steps = 500  # optimizer steps per epoch
_C.lr = 0.03  # SGD learning rate
_C.momentum = 0.9  # SGD momentum
_C.weight_decay = 5e-4  # SGD weight decay
_C.seed = None  # random seed; None draws one and records it in the run's config.yaml

# ---- run ----------------------------------------------------------------------------
_C.output_dir = None  # run folder; may hold {seed}, {algorithm} and {config} (the --cfg file's name) fields; None = out/<DATA.NAME>_N<NUM_L>/{algorithm}/seed{seed}
_C.resume = None  # run folder to continue from its last checkpoint; its config.yaml is the base, and only runtime keys may differ (docs/running.md#resume)
_C.allow_extend = False  # with resume: num_epochs N above the run's own continues it to N epochs, the cosine schedule recomputed for N from the current epoch on (docs/running.md#resume)
_C.checkpoint_freq = 0  # also keep a checkpoint every K epochs (0 = only the last)
_C.print_freq = 10  # write a progress line to log.txt every K steps
_C.eval_only = False  # evaluate the checkpoint in model_dir and exit
_C.model_dir = None  # run folder evaluated by eval_only
_C.gpu = None  # CUDA device index; None = cuda:0 when CUDA exists, else CPU
_C.deterministic = False  # torch deterministic algorithms (slower on CUDA)
_C.setting = ""  # name of this setting in sweeps, summarize.py and reports; '' = the --cfg file's name (else DATA.NAME_N<NUM_L>)
_C.paper_top1 = None  # the paper's top-1 (%) for this setting, shown beside the results by summarize.py and reports (None: the paper has none)
_C.plugins = []  # your plug-in modules (module names or .py paths), imported before the rest of the config is read (docs/extending.md)

# Keys of the authors' code that do nothing here: accepted, reported in one warning.
INERT_KEYS = (
    "dataset", "root", "resolution", "stride", "batch_size", "tau", "downsampling",
    "n_max", "test_ensemble", "vpt_last", "lam_tokens", "scalar_learnable",
    "adapter_scalar", "block_num", "patch_size", "mode", "rand_init1",
    "load_epoch", "DATA.NUM_WORKERS",
)
# Types accepted for keys whose default is None.
_NONE_TYPES = {
    "bms": (bool,), "dls": (bool,),
    "seed": (int,), "output_dir": (str,), "resume": (str,), "model_dir": (str,),
    "gpu": (int,), "partial": (int,), "paper_top1": (float, int),
}
_CHOICES = {
    "prec": ("fp16", "fp32", "amp", "bf16"),
    "DATA.UNLABELED": ("dataset", "num_u", "all"),
    "DATA.NORMALIZE": ("dataset", "clip"),
    "bms_form": ("released", "paper"),
}

# ---- resume (docs/running.md#resume) ------------------------------------------------------
RUN_CONFIG = "config.yaml"  # a run folder's record of the config it trains with
# The one allow-list: keys a resumed run (``resume RUN``) may set to other values than
# RUN/config.yaml's. They change how the run executes (workers, logging, where the
# files go, which device, kernels, memory), never what it trains. Every other key
# shapes training and must keep the run's value; three follow rules of their own:
# ``seed`` None means the run's seed, ``plugins`` may be respelled or reordered but
# must name the same modules, and ``num_epochs`` may grow with ``allow_extend True``.
RESUME_RUNTIME_KEYS = (
    "num_workers", "print_freq", "checkpoint_freq", "gpu", "deterministic", "compile",
    "grad_checkpointing", "cache_dir", "DATA.DOWNLOAD", "output_dir", "resume",
    "model_dir", "eval_only", "allow_extend", "setting", "paper_top1",
)
# ... and what eval_only / predict may also set: where the test data is, how much of it,
# the numeric mode of the forward.
EVAL_RUNTIME_KEYS = RESUME_RUNTIME_KEYS + ("DATA.DATAPATH", "DATA.NUM_TEST", "prec")
_INT_RANGE = 2**63  # ints must fit a signed 64-bit integer (torch's seeds and sizes)

_CHECKS: dict[str, Callable[[object], str | None]] = {}
_DECLARED: dict[str, tuple[object, str]] = {}


def positive(value) -> str | None:
    """A ``check`` for :func:`declare`: the value must be > 0."""
    return None if value > 0 else "must be positive"


def non_negative(value) -> str | None:
    """A ``check`` for :func:`declare`: the value must be >= 0 (a loss weight)."""
    return None if value >= 0 else "must be >= 0"


def momentum(value) -> str | None:
    """A ``check`` for :func:`declare`: an EMA momentum in [0, 1)."""
    return None if 0.0 <= value < 1.0 else "an EMA momentum must lie in [0, 1)"


def declare(key: str, default, comment: str, choices: tuple | None = None,
            check: Callable[[object], str | None] | None = None) -> None:
    """Add a plug-in's own config key to the defaults tree, from beside its code.

    ``key`` is dotted (``FLEXMATCH.WARMUP`` creates the node ``FLEXMATCH``); its type is
    the default's. ``choices`` lists the values allowed; ``check(value)`` returns why a
    value is wrong, or None. ``comment`` is the key's line in docs/configuration.md.
    Declaring a key twice is allowed only with the same default (a module imported
    again).
    """
    if key in _DECLARED:
        if _DECLARED[key][0] != default:
            raise ValueError(f"config key {key} declared twice with different defaults")
        return
    *parents, leaf = key.split(".")
    node = _C
    for p in parents:
        if p not in node:
            node[p] = CN()
        node = node[p]
    if leaf in node:
        raise ValueError(f"config key {key} is already in the defaults tree")
    node[leaf] = default
    _DECLARED[key] = (default, comment)
    if choices:
        _CHOICES[key] = tuple(choices)
    if check:
        _CHECKS[key] = check


# Plug-ins' rewrites of the (key, value) pairs a config is read from, in order, before
# anything is merged: where an authors' switch means more than one key here (SemiKD's
# ``KD True`` selects an algorithm, and its ``resume TEACHER`` names the teacher).
# Each takes and returns the list of (pairs, source name) of the file and the command line.
_PAIR_REWRITES: list[Callable[[list], list]] = []


def rewrite_pairs(rewrite: Callable[[list], list]) -> Callable[[list], list]:
    """Decorator: register a rewrite of the config's (key, value) pairs (see above)."""
    if rewrite not in _PAIR_REWRITES:
        _PAIR_REWRITES.append(rewrite)
    return rewrite


def declared_keys() -> dict[str, tuple[object, str]]:
    """Plug-ins' keys so far: dotted key -> (default, comment)."""
    return dict(_DECLARED)


def get_cfg_defaults() -> CN:
    """A fresh copy of the defaults tree: the keys of this file and those the imported
    plug-ins declared (all built-in ones once :mod:`finessl.plugins` is imported)."""
    return _C.clone()


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def all_keys(node: CN, prefix: str = "") -> list[str]:
    """Every leaf key of a config tree, dotted (``DATA.NUM_L``)."""
    keys = []
    for k, v in node.items():
        keys.extend(all_keys(v, f"{prefix}{k}.") if isinstance(v, CN) else [f"{prefix}{k}"])
    return keys


def _parse_cli_value(text: str):
    """``True`` -> bool, ``0.5`` -> float, ``out/x`` -> str (yacs' literal_eval rule)."""
    try:
        return ast.literal_eval(text)
    except Exception:  # ValueError, SyntaxError; RecursionError or MemoryError when deep
        return text


def _show(value) -> str:
    """A value in a one-line message: strings quoted (so a newline shows as \\n), long
    values cut."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= 200 else text[:200] + "..."


def show_path(path: str) -> str:
    """A path in a one-line message: as it is, or quoted when it holds a newline or
    another unprintable character."""
    return path if path.isprintable() else repr(path)


def _checked(key: str, value, source: str):
    """``value`` (already of the key's type) refused when no run could use it: an int
    beyond 64 bits, a float that is not finite, a string holding a NUL character."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -_INT_RANGE <= value < _INT_RANGE:
            raise UserError(f"{key}: {value} is out of range (|value| < 2**63) ({source})")
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}: expected a finite number, got {value} ({source})")
    elif isinstance(value, str) and "\0" in value:
        raise UserError(f"{key}: {_show(value)} holds a NUL character ({source})")
    elif isinstance(value, list):
        for item in value:
            _checked(key, item, source)
    return value


def _coerce(key: str, default, value, source: str):
    if isinstance(value, str) and not isinstance(default, str):
        value = _parse_cli_value(value)  # YAML reads 5e-4 as a string; yacs evaluates it
    return _checked(key, _coerce_type(key, default, value, source), source)


def _to_float(key: str, value, source: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise UserError(f"{key}: {_show(value)} is too large for a float ({source})") from None


def _coerce_type(key: str, default, value, source: str):
    if key in _NONE_TYPES:
        if value is None:
            return None
        allowed = _NONE_TYPES[key]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            if str in _NONE_TYPES[key]:
                return str(value)
            raise UserError(f"{key}: expected {_NONE_TYPES[key][0].__name__} or null, "
                            f"got {_show(value)} ({source})")
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _to_float(key, value, source)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, list):  # a list of strings; one string is a list of one
        value = [value] if isinstance(value, str) else value
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    raise UserError(f"{key}: expected {type(default).__name__}, got {_show(value)} ({source})")


def _set(cfg: CN, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value


def _get(cfg: CN, key: str):
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node


def _merge(cfg: CN, pairs: list[tuple[str, object]], source: str, seen_inert: list[str]) -> None:
    known = all_keys(cfg)
    passive = set(INERT_KEYS) | {"zero_shot"}
    for key, value in pairs:
        if key == "zero_shot":  # the authors' switch for the CLIP zero-shot baseline
            if _coerce(key, False, value, source):
                _set(cfg, "algorithm", "zeroshot")
            continue
        if key in passive:
            if key in INERT_KEYS and key not in seen_inert:
                seen_inert.append(key)
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known + list(passive), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"unknown config key {_show(key)} ({source}){hint}")
        value = _coerce(key, _get(cfg, key), value, source)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise UserError(f"{key}: {_show(value)} is not one of {', '.join(_CHOICES[key])} "
                            f"({source})")
        _set(cfg, key, value)


def _validate(cfg: CN) -> None:
    for key, registry in CONFIG_REGISTRIES.items():  # plug-in names: one line, the choices
        registry.get(_get(cfg, key))
    positive = ("DATA.NUM_L", "DATA.BATCH_SIZE", "DATA.MU_U", "num_epochs", "total_steps",
                "print_freq")
    for key in positive:
        if _get(cfg, key) <= 0:
            raise UserError(f"{key}: must be positive, got {_get(cfg, key)}")
    if cfg.partial is not None and cfg.partial <= 0:
        raise UserError(f"partial: the number of last blocks must be positive, got {cfg.partial}")
    # w_con and alpha: the unlabeled loss weight and the margin scale (a negative one
    # would reward the loss it weighs); seed: torch, numpy and random take it as is.
    for key in ("DATA.NUM_U", "DATA.NUM_TEST", "num_workers", "checkpoint_freq", "lr",
                "weight_decay", "input_size", "w_con", "alpha"):
        if _get(cfg, key) < 0:
            raise UserError(f"{key}: must be >= 0, got {_get(cfg, key)}")
    for key in ("seed", "gpu"):
        if _get(cfg, key) is not None and _get(cfg, key) < 0:
            raise UserError(f"{key}: must be >= 0 (or null), got {_get(cfg, key)}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise UserError(f"momentum: SGD momentum must lie in [0, 1), got {cfg.momentum}")
    for key in ("DATA.IMB_L", "DATA.IMB_U"):
        if _get(cfg, key) < 1.0:
            raise UserError(f"{key}: imbalance ratio must be >= 1, got {_get(cfg, key)}")
    for key, check in _CHECKS.items():
        problem = check(_get(cfg, key))
        if problem:
            raise UserError(f"{key}: {problem}, got {_get(cfg, key)}")
    for key in ("th", "th_min"):
        if not 0.0 <= _get(cfg, key) <= 1.0:
            raise UserError(f"{key}: a confidence threshold must lie in [0, 1], got {_get(cfg, key)}")
    if cfg.DATA.CUTOUT < -1:
        raise UserError(f"DATA.CUTOUT: a side in px, -1 (FixMatch's random side) or 0 (none), "
                        f"got {cfg.DATA.CUTOUT}")
    if not 0.0 <= cfg.smoothing < 1.0:
        raise UserError(f"smoothing: must lie in [0, 1), got {cfg.smoothing}")
    if cfg.vpt_deep and cfg.vpt_shallow:
        raise UserError("vpt_deep and vpt_shallow are both True: choose one")
    if cfg.eval_only and not cfg.model_dir:
        raise UserError("eval_only True needs model_dir DIR (a run folder with a checkpoint)")
    if "{}" not in cfg.template:
        raise UserError(f"template: needs a '{{}}' for the class name, got {_show(cfg.template)}")
    try:
        cfg.template.format("class name")
    except (IndexError, KeyError, ValueError) as e:
        raise UserError(f"template: {_show(cfg.template)} is not a format string with one "
                        f"'{{}}' ({type(e).__name__}: {_show(str(e))}); write other braces "
                        f"as '{{{{' and '}}}}'") from None
    if cfg.allow_extend and not cfg.resume:
        raise UserError("allow_extend True only applies to resume RUN (to continue a run "
                        "past its num_epochs); drop it for a fresh run")


def _read_yaml(cfg_file: str) -> dict:
    name = show_path(cfg_file)
    if os.path.isdir(cfg_file):
        raise UserError(f"config file {name} is a folder, not a YAML file")
    if not os.path.isfile(cfg_file):
        raise UserError(f"config file not found: {name}")
    try:
        with open(cfg_file, "rb") as f:  # bytes: YAML finds the encoding, bad bytes are its error
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise UserError(f"{name}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        lines = str(e).strip().splitlines()
        raise UserError(f"{name}: not valid YAML ({lines[0] if lines else type(e).__name__})"
                        ) from None
    except Exception as e:  # a number YAML cannot build, nesting too deep, ...
        raise UserError(f"{name}: not valid YAML ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a mapping of config keys at the top level")
    return data


def _import_plugins(specs: list[str], source: str) -> None:
    for spec in specs:
        if spec.endswith(".py"):
            if not os.path.isfile(spec):
                raise UserError(f"plugins: no file {_show(spec)} ({source})")
        elif not all(part.isidentifier() for part in spec.split(".")):
            raise UserError(f"plugins: {_show(spec)} is neither a .py file nor a module name "
                            f"({source})")
        import_plugin(spec)


def _plugin_set(specs: list[str]) -> set[str]:
    """The modules a ``plugins`` list names: files by real path, modules by name."""
    return {os.path.realpath(s) if s.endswith(".py") else s for s in specs}


def last_value(sources, key: str):
    """The value the last source gives ``key`` (None when none does), unchecked."""
    value = None
    for pairs, _ in sources:
        for k, v in pairs:
            if k == key:
                value = v
    return value


def _run_config_pairs(run_dir: str, key: str = "resume") -> tuple[list[tuple[str, object]], str]:
    """The flattened RUN/config.yaml a resume (``key`` resume) or an evaluation (``key``
    model_dir) starts from, and its path."""
    path, run_name = os.path.join(run_dir, RUN_CONFIG), show_path(run_dir)
    if not os.path.isdir(run_dir):
        raise UserError(f"{key}: {run_name} is not a folder (give the run folder)")
    if not os.path.lexists(path):  # a run folder holds config.yaml and checkpoint_last.pt
        raise UserError(f"{key}: no {RUN_CONFIG} in {run_name}, so no run there (a run "
                        f"folder holds {RUN_CONFIG} and checkpoint_last.pt; {key} starts "
                        f"from the run's own config)")
    pairs = [(k, v) for k, v in _flatten(_read_yaml(path)) if k not in ("resume", "output_dir")]
    return pairs, show_path(path)


def _changed(stored: CN, cfg: CN, allowed) -> list[tuple[str, object, object]]:
    """(key, run's value, new value) of every key outside ``allowed`` that differs."""
    changed = []
    for key in all_keys(cfg):
        if key in allowed:
            continue
        old, new = _get(stored, key), _get(cfg, key)
        if key == "plugins" and _plugin_set(old) == _plugin_set(new):
            continue
        if old != new:
            changed.append((key, old, new))
    return changed


def keep_run_config(stored: CN, cfg: CN, run_dir: str, command: str) -> None:
    """``eval_only`` / ``predict`` (``command``) rebuild the run as it was trained: every
    key outside :data:`EVAL_RUNTIME_KEYS` takes the run's config.yaml value again, and
    those given with another value are named in one warning (repeating a training
    command's keys is harmless; changing the model would not be the run trained)."""
    changed = _changed(stored, cfg, EVAL_RUNTIME_KEYS)
    for key, old, _ in changed:
        _set(cfg, key, old)
    if changed:
        log.warning("%s: %s ignored: the run %s is rebuilt from its %s, and only runtime "
                    "keys (gpu, num_workers, prec, DATA.DATAPATH, DATA.NUM_TEST, ...: "
                    "docs/running.md) apply", command,
                    ", ".join(f"{k} {_show(new)}" for k, _, new in changed),
                    show_path(run_dir), RUN_CONFIG)


def _resume_changes(stored: CN, cfg: CN, run_dir: str) -> None:
    """Refuse, in one line naming each, the keys that shape training and differ from the
    run's config.yaml (every key but :data:`RESUME_RUNTIME_KEYS`, with the rules there)."""
    changed = [(key, old, new) for key, old, new in _changed(stored, cfg, RESUME_RUNTIME_KEYS)
               if not (key == "num_epochs" and cfg.allow_extend and new > old)]  # an extension
    if not changed:
        return
    listed = ", ".join(f"{k} ({_show(old)} -> {_show(new)})" for k, old, new in changed)
    hint = ""
    if any(k == "num_epochs" for k, _, _ in changed):
        old = stored.num_epochs
        hint = (f"; to train longer add allow_extend True with num_epochs above {old}"
                if not cfg.allow_extend else
                f"; allow_extend only raises num_epochs (the run's is {old})")
    run_name = show_path(run_dir)
    raise UserError(f"resume: {run_name} differs from its {RUN_CONFIG} in {listed}; resume "
                    f"with the run's own config ('resume {run_name}' alone continues it as it "
                    f"was) or start a new run in another output_dir{hint}")


def load_config(cfg_file: str | None = None, opts: list[str] | None = None) -> CN:
    """Defaults <- YAML file <- ``KEY VALUE`` pairs, validated and frozen.

    With ``resume RUN`` (from either), RUN/config.yaml comes between the defaults and
    the file: a resume starts from the run's own config, and any key outside
    :data:`RESUME_RUNTIME_KEYS` that this invocation changes is refused in one line
    naming each (``num_epochs`` may grow with ``allow_extend True``). ``eval_only True
    model_dir RUN`` starts from RUN/config.yaml too, so the run folder alone is enough,
    and only :data:`EVAL_RUNTIME_KEYS` may differ from it (others are ignored, with a
    warning).

    The ``plugins`` the file and the pairs name are imported first, so the keys they
    declare can be set. The built-in plug-ins' keys are in the tree once their packages
    are imported: :func:`finessl.plugins.load_config` does both and checks the names.
    Raises :class:`UserError` naming the offending key, file or value.
    """
    sources = []
    if cfg_file:
        sources.append((_flatten(_read_yaml(cfg_file)), show_path(cfg_file)))
    opts = list(opts or [])
    if len(opts) % 2:
        raise UserError(f"command-line overrides come in KEY VALUE pairs; {_show(opts[-1])} "
                        f"has no value")
    sources.append(([(opts[i], _parse_cli_value(opts[i + 1])) for i in range(0, len(opts), 2)],
                    "command line"))
    for rewrite in _PAIR_REWRITES:  # a plug-in's reading of the authors' switches (SemiKD's KD)
        sources = rewrite(sources)
    resume = _coerce("resume", None, last_value(sources, "resume"), "the resume key")
    evaluated = None  # eval_only True model_dir RUN: the run's own config.yaml as well
    if not resume and _coerce("eval_only", False, last_value(sources, "eval_only") or False,
                              "the eval_only key"):
        evaluated = _coerce("model_dir", None, last_value(sources, "model_dir"),
                            "the model_dir key")
        if evaluated and not os.path.isfile(os.path.join(evaluated, RUN_CONFIG)):
            evaluated = None  # no run there: reading its checkpoint says so, in one line
    base_dir = resume or evaluated
    stored_source = (_run_config_pairs(base_dir, "resume" if resume else "model_dir")
                     if base_dir else None)
    # The plug-ins the run's config.yaml names (its keys must merge), then the ones
    # this invocation names, the last mention winning.
    for layer in ([[stored_source]] if stored_source else []) + [sources]:
        plugins: tuple[list[str], str] = ([], "")
        for pairs, source in layer:
            for key, value in pairs:
                if key == "plugins":
                    plugins = (_coerce(key, [], value, source), source)
        _import_plugins(*plugins)
    cfg = get_cfg_defaults()
    seen_inert: list[str] = []
    stored = None
    if stored_source:  # a resume starts from the run's config.yaml
        _merge(cfg, *stored_source, seen_inert)
        stored = cfg.clone()
    for pairs, source in sources:
        _merge(cfg, pairs, source, seen_inert)
    if cfg_file and not cfg.setting:
        cfg.setting = os.path.splitext(os.path.basename(cfg_file))[0]
    if cfg_file and cfg.output_dir and "{config}" in cfg.output_dir:  # the file's name
        name = os.path.splitext(os.path.basename(cfg_file))[0]
        cfg.output_dir = cfg.output_dir.replace("{config}",
                                                name.replace("{", "{{").replace("}", "}}"))
    if stored is not None:
        if cfg.seed is None:  # seed null (a YAML's default): the run's own seed
            cfg.seed = stored.seed
        if resume:
            cfg.output_dir = resume  # a resumed run writes into its own folder
    _validate(cfg)
    if resume:
        _resume_changes(stored, cfg, base_dir)
    elif stored is not None:
        keep_run_config(stored, cfg, base_dir, "eval_only")
    if seen_inert:
        log.warning("config keys with no effect in FineSSL, accepted for compatibility: %s",
                    ", ".join(seen_inert))
    cfg.freeze()
    return cfg
