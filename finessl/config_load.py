"""Reading a config: defaults <- YAML file <- ``KEY VALUE`` pairs (:func:`load_config`),
and the two ways a run's own ``config.yaml`` comes first: ``resume RUN`` (keys that
shape training must keep the run's values) and ``eval_only`` / ``predict`` (only
runtime keys apply). The rules are in docs/running.md#resume; the allow-lists are
:data:`finessl.config.RESUME_RUNTIME_KEYS` and :data:`~finessl.config.EVAL_RUNTIME_KEYS`.
"""
from __future__ import annotations

import logging
import os

from yacs.config import CfgNode as CN

from finessl.config import (EVAL_RUNTIME_KEYS, PAIR_REWRITES, RESUME_RUNTIME_KEYS, RUN_CONFIG,
                            all_keys, get_cfg_defaults)
from finessl.config_values import (coerce, flatten, get_key, merge, parse_cli_value, read_yaml,
                                   set_key, show, show_path, validate)
from finessl.errors import UserError
from finessl.registry import import_plugin

log = logging.getLogger(__name__)

# The built-in plug-in packages, loaded as a user's ``plugins`` are: by module name.
# Each imports its modules, which register themselves and declare their config keys;
# none imports open_clip or timm until a model is built, so a config error stays cheap.
BUILTIN_PLUGINS = ("finessl.algorithms", "finessl.data", "finessl.models")


def import_builtin_plugins() -> None:
    """Register every built-in plug-in (their keys join the defaults tree); idempotent."""
    for package in BUILTIN_PLUGINS:
        import_plugin(package)


def _import_plugins(specs: list[str], source: str) -> None:
    for spec in specs:
        if spec.endswith(".py"):
            if not os.path.isfile(spec):
                raise UserError(f"plugins: no file {show(spec)} ({source})")
        elif not all(part.isidentifier() for part in spec.split(".")):
            raise UserError(f"plugins: {show(spec)} is neither a .py file nor a module name "
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
    pairs = [(k, v) for k, v in flatten(read_yaml(path)) if k not in ("resume", "output_dir")]
    return pairs, show_path(path)


def _changed(stored: CN, cfg: CN, allowed) -> list[tuple[str, object, object]]:
    """(key, run's value, new value) of every key outside ``allowed`` that differs."""
    changed = []
    for key in all_keys(cfg):
        if key in allowed:
            continue
        old, new = get_key(stored, key), get_key(cfg, key)
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
        set_key(cfg, key, old)
    if changed:
        log.warning("%s: %s ignored: the run %s is rebuilt from its %s, and only runtime "
                    "keys (gpu, num_workers, prec, DATA.DATAPATH, DATA.NUM_TEST, ...: "
                    "docs/running.md) apply", command,
                    ", ".join(f"{k} {show(new)}" for k, _, new in changed),
                    show_path(run_dir), RUN_CONFIG)


def _resume_changes(stored: CN, cfg: CN, run_dir: str) -> None:
    """Refuse, in one line naming each, the keys that shape training and differ from the
    run's config.yaml (every key but :data:`RESUME_RUNTIME_KEYS`, with the rules there)."""
    changed = [(key, old, new) for key, old, new in _changed(stored, cfg, RESUME_RUNTIME_KEYS)
               if not (key == "num_epochs" and cfg.allow_extend and new > old)]  # an extension
    if not changed:
        return
    listed = ", ".join(f"{k} ({show(old)} -> {show(new)})" for k, old, new in changed)
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


def command_line_pairs(opts: list[str] | None) -> list[tuple[str, object]]:
    """``KEY VALUE ...`` strings as (key, value) pairs, each value read as a literal."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise UserError(f"command-line overrides come in KEY VALUE pairs; {show(opts[-1])} "
                        f"has no value")
    return [(opts[i], parse_cli_value(opts[i + 1])) for i in range(0, len(opts), 2)]


def load_config(cfg_file: str | None = None, opts: list[str] | None = None) -> CN:
    """Defaults <- YAML file <- ``KEY VALUE`` pairs, validated and frozen.

    With ``resume RUN`` (from either), RUN/config.yaml comes between the defaults and
    the file: a resume starts from the run's own config, and any key outside
    :data:`RESUME_RUNTIME_KEYS` that this invocation changes is refused in one line
    naming each (``num_epochs`` may grow with ``allow_extend True``). ``eval_only True
    model_dir RUN`` starts from RUN/config.yaml too, so the run folder alone is enough,
    and only :data:`EVAL_RUNTIME_KEYS` may differ from it (others are ignored, with a
    warning).

    The built-in plug-ins (:data:`BUILTIN_PLUGINS`), then the ``plugins`` the file and
    the pairs name, are imported first, so the keys they declare can be set and the
    names a config asks for are checked. Raises :class:`UserError` naming the offending
    key, file or value.
    """
    import_builtin_plugins()
    sources = []
    if cfg_file:
        sources.append((flatten(read_yaml(cfg_file)), show_path(cfg_file)))
    sources.append((command_line_pairs(opts), "command line"))
    for rewrite in PAIR_REWRITES:  # a plug-in's reading of the authors' switches (SemiKD's KD)
        sources = rewrite(sources)
    resume = coerce("resume", None, last_value(sources, "resume"), "the resume key")
    evaluated = None  # eval_only True model_dir RUN: the run's own config.yaml as well
    if not resume and coerce("eval_only", False, last_value(sources, "eval_only") or False,
                              "the eval_only key"):
        evaluated = coerce("model_dir", None, last_value(sources, "model_dir"),
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
                    plugins = (coerce(key, [], value, source), source)
        _import_plugins(*plugins)
    cfg = get_cfg_defaults()
    seen_inert: list[str] = []
    stored = None
    if stored_source:  # a resume starts from the run's config.yaml
        merge(cfg, *stored_source, seen_inert)
        stored = cfg.clone()
    for pairs, source in sources:
        merge(cfg, pairs, source, seen_inert)
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
    validate(cfg)
    if resume:
        _resume_changes(stored, cfg, base_dir)
    elif stored is not None:
        keep_run_config(stored, cfg, base_dir, "eval_only")
    if seen_inert:
        log.warning("config keys with no effect in FineSSL, accepted for compatibility: %s",
                    ", ".join(seen_inert))
    cfg.freeze()
    return cfg


def load_config_dict(mapping: dict, opts: list[str] | None = None,
                     source: str = "a stored config") -> CN:
    """Defaults <- ``mapping`` (a config held in memory: a checkpoint's stored config)
    <- ``KEY VALUE`` pairs, validated and frozen; ``source`` names the mapping in
    errors. The mapping is a finished run's record, so no resume or eval_only layer
    and no switch rewriting apply; the ``plugins`` it names are imported first."""
    if not isinstance(mapping, dict):
        raise UserError(f"{source}: expected a mapping of config keys at the top level")
    import_builtin_plugins()
    sources = [(flatten(mapping), source), (command_line_pairs(opts), "command line")]
    for pairs, name in sources:
        for key, value in pairs:
            if key == "plugins":
                _import_plugins(coerce(key, [], value, name), name)
    cfg = get_cfg_defaults()
    seen_inert: list[str] = []
    for pairs, name in sources:
        merge(cfg, pairs, name, seen_inert)
    validate(cfg)
    cfg.freeze()
    return cfg
