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

from finessl.config import CROSS_CHECKS, INERT_KEYS, INT_RANGE, KEYS, all_keys, show
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
    allowed = KEYS[key].types if key in KEYS else None  # a key whose default is None
    if allowed:
        if value is None:
            return None
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            if str in allowed:
                return str(value)
            raise UserError(f"{key}: expected {allowed[0].__name__} or null, "
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
        choices = KEYS[key].choices if key in KEYS else None
        if choices and value not in choices:
            raise UserError(f"{key}: {show(value)} is not one of {', '.join(map(str, choices))} "
                            f"({source})")
        set_key(cfg, key, value)


def validate(cfg: CN) -> None:
    """The merged tree's checks: every plug-in name a key asks for is registered, every
    declared ``check`` holds (``KEY: why, got VALUE``), then the checks that read two
    keys (:data:`~finessl.config.CROSS_CHECKS`)."""
    for key, registry in CONFIG_REGISTRIES.items():  # plug-in names: one line, the choices
        registry.get(get_key(cfg, key))
    for key, spec in KEYS.items():
        value = get_key(cfg, key)
        problem = spec.check(value) if spec.check and value is not None else None
        if problem:
            raise UserError(f"{key}: {problem}, got {show(value)}")
    for check in CROSS_CHECKS:
        check(cfg)


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
