"""How a config value is read and checked: a ``KEY VALUE`` string or a YAML value
made the key's type, refused in one line when no run could use it, merged into the
tree; then the whole tree's checks (:func:`validate`), and the YAML file itself
(:func:`read_yaml`). Every mistake is a :class:`~finessl.errors.UserError` naming the
key, the value and where it came from (a file, the command line, a run's config.yaml).
"""
from __future__ import annotations

import ast
import difflib
import math
import os

import yaml
from yacs.config import CfgNode as CN

from finessl.config import CHECKS, CHOICES, INERT_KEYS, INT_RANGE, NONE_TYPES, all_keys
from finessl.errors import UserError
from finessl.registry import CONFIG_REGISTRIES


def flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def parse_cli_value(text: str):
    """``True`` -> bool, ``0.5`` -> float, ``out/x`` -> str (yacs' literal_eval rule)."""
    try:
        return ast.literal_eval(text)
    except Exception:  # ValueError, SyntaxError; RecursionError or MemoryError when deep
        return text


def show(value) -> str:
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
        if not -INT_RANGE <= value < INT_RANGE:
            raise UserError(f"{key}: {value} is out of range (|value| < 2**63) ({source})")
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}: expected a finite number, got {value} ({source})")
    elif isinstance(value, str) and "\0" in value:
        raise UserError(f"{key}: {show(value)} holds a NUL character ({source})")
    elif isinstance(value, list):
        for item in value:
            _checked(key, item, source)
    return value


def coerce(key: str, default, value, source: str):
    if isinstance(value, str) and not isinstance(default, str):
        value = parse_cli_value(value)  # YAML reads 5e-4 as a string; yacs evaluates it
    return _checked(key, _coerce_type(key, default, value, source), source)


def _to_float(key: str, value, source: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise UserError(f"{key}: {show(value)} is too large for a float ({source})") from None


def _coerce_type(key: str, default, value, source: str):
    if key in NONE_TYPES:
        if value is None:
            return None
        allowed = NONE_TYPES[key]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            if str in NONE_TYPES[key]:
                return str(value)
            raise UserError(f"{key}: expected {NONE_TYPES[key][0].__name__} or null, "
                            f"got {show(value)} ({source})")
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
    raise UserError(f"{key}: expected {type(default).__name__}, got {show(value)} ({source})")


def set_key(cfg: CN, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value


def get_key(cfg: CN, key: str):
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node


def merge(cfg: CN, pairs: list[tuple[str, object]], source: str, seen_inert: list[str]) -> None:
    known = all_keys(cfg)
    passive = set(INERT_KEYS) | {"zero_shot"}
    for key, value in pairs:
        if key == "zero_shot":  # the authors' switch for the CLIP zero-shot baseline
            if coerce(key, False, value, source):
                set_key(cfg, "algorithm", "zeroshot")
            continue
        if key in passive:
            if key in INERT_KEYS and key not in seen_inert:
                seen_inert.append(key)
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known + list(passive), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"unknown config key {show(key)} ({source}){hint}")
        value = coerce(key, get_key(cfg, key), value, source)
        if key in CHOICES and value not in CHOICES[key]:
            raise UserError(f"{key}: {show(value)} is not one of {', '.join(CHOICES[key])} "
                            f"({source})")
        set_key(cfg, key, value)


def validate(cfg: CN) -> None:
    for key, registry in CONFIG_REGISTRIES.items():  # plug-in names: one line, the choices
        registry.get(get_key(cfg, key))
    positive = ("DATA.NUM_L", "DATA.BATCH_SIZE", "DATA.MU_U", "num_epochs", "total_steps",
                "print_freq")
    for key in positive:
        if get_key(cfg, key) <= 0:
            raise UserError(f"{key}: must be positive, got {get_key(cfg, key)}")
    if cfg.partial is not None and cfg.partial <= 0:
        raise UserError(f"partial: the number of last blocks must be positive, got {cfg.partial}")
    # w_con and alpha: the unlabeled loss weight and the margin scale (a negative one
    # would reward the loss it weighs); seed: torch, numpy and random take it as is.
    for key in ("DATA.NUM_U", "DATA.NUM_TEST", "num_workers", "checkpoint_freq", "lr",
                "weight_decay", "input_size", "w_con", "alpha"):
        if get_key(cfg, key) < 0:
            raise UserError(f"{key}: must be >= 0, got {get_key(cfg, key)}")
    for key in ("seed", "gpu"):
        if get_key(cfg, key) is not None and get_key(cfg, key) < 0:
            raise UserError(f"{key}: must be >= 0 (or null), got {get_key(cfg, key)}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise UserError(f"momentum: SGD momentum must lie in [0, 1), got {cfg.momentum}")
    for key in ("DATA.IMB_L", "DATA.IMB_U"):
        if get_key(cfg, key) < 1.0:
            raise UserError(f"{key}: imbalance ratio must be >= 1, got {get_key(cfg, key)}")
    for key, check in CHECKS.items():
        problem = check(get_key(cfg, key))
        if problem:
            raise UserError(f"{key}: {problem}, got {get_key(cfg, key)}")
    for key in ("th", "th_min"):
        if not 0.0 <= get_key(cfg, key) <= 1.0:
            raise UserError(f"{key}: a confidence threshold must lie in [0, 1], got {get_key(cfg, key)}")
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
        raise UserError(f"template: needs a '{{}}' for the class name, got {show(cfg.template)}")
    try:
        cfg.template.format("class name")
    except (IndexError, KeyError, ValueError) as e:
        raise UserError(f"template: {show(cfg.template)} is not a format string with one "
                        f"'{{}}' ({type(e).__name__}: {show(str(e))}); write other braces "
                        f"as '{{{{' and '}}}}'") from None
    if cfg.allow_extend and not cfg.resume:
        raise UserError("allow_extend True only applies to resume RUN (to continue a run "
                        "past its num_epochs); drop it for a fresh run")


def read_yaml(cfg_file: str) -> dict:
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
