"""Run folders as the report reads them: ``results.json`` (a finished run),
``diagnostics.json`` (written after every epoch, so a run in progress has one),
``config.yaml``. A missing or malformed file is a one-line :class:`UserError` naming it.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import yaml

from finessl.config import RUN_CONFIG
from finessl.engine.diagnostics import DIAGNOSTICS, FORMAT, summary
from finessl.errors import UserError
from finessl.io import RESULTS
from finessl.metrics import class_groups, group_accuracies

SEED_FOLDER = re.compile(r"^seed\d+$")
# what a sweep table can show (``--metric``): the run's last or best test top-1, or the
# last epoch's balanced accuracy or accuracy over the head / medium / tail classes
# (docs/selection.md: the last epoch; the best validation epoch, DATA.NUM_VAL; the best
# test epoch, an oracle that chooses with the test labels, 'best' its older name)
METRICS = {"last": "last_top1", "best_val": "best_val_top1", "best_test": "best_test_top1",
           "best": "best_test_top1", "balanced": "balanced_acc", "head": "head_acc",
           "medium": "medium_acc", "tail": "tail_acc"}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not JSON ({str(e)[:120]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a FineSSL record: a JSON object was expected")
    return data


def _check_history(history, path: str) -> list[dict]:
    """Every entry a dict with a numeric ``top1`` and ``epoch``; the optional records
    the figures draw, of the types the trainer writes."""
    if not isinstance(history, list) or not history:
        raise UserError(f"{path}: 'history' must be a non-empty list of epochs")
    shapes = {"per_class_acc": list, "pseudo_counts": list, "confidence": dict,
              "reliability": dict, "train": dict, "signals": dict}
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or not _number(entry.get("top1")) \
                or not _number(entry.get("epoch")):
            raise UserError(f"{path}: history entry {i} has no numeric 'top1' and 'epoch'")
        for key, kind in shapes.items():
            if key in entry and not isinstance(entry[key], kind):
                raise UserError(f"{path}: history entry {i}: '{key}' is not a {kind.__name__}")
    return history


def read_results(path: str) -> dict:
    data = _read_json(path)
    for key in ("best_top1", "last_top1", "best_epoch", "last_epoch"):
        if not _number(data.get(key)) or not math.isfinite(data[key]):
            raise UserError(f"{path} is not a FineSSL results file: no numeric '{key}'")
    _check_history(data.get("history"), path)
    return data


def read_diagnostics(path: str) -> dict:
    data = _read_json(path)
    if not isinstance(data.get("format"), int) or data["format"] > FORMAT:
        raise UserError(f"{path}: format {data.get('format')!r} is not one this FineSSL reads "
                        f"(up to {FORMAT})")
    _check_history(data.get("history"), path)
    names = data.get("classnames")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: 'classnames' must be a list of names")
    confusion = data.get("confusion")
    if confusion is not None and (not isinstance(confusion, list) or len(confusion) != len(names)
                                  or not all(isinstance(r, list) and len(r) == len(names)
                                             for r in confusion)):
        raise UserError(f"{path}: 'confusion' must be a {len(names)} x {len(names)} matrix")
    return data


@dataclass
class Run:
    """One run folder, read."""
    path: str
    results: dict | None
    diagnostics: dict | None
    config: dict = field(default_factory=dict)
    config_text: str = ""

    @property
    def finished(self) -> bool:
        return self.results is not None

    @property
    def history(self) -> list[dict]:
        source = self.diagnostics if self.diagnostics is not None else self.results
        return source["history"]

    def get(self, key: str, default=None):
        """A run-level field: results.json, else config.yaml."""
        if self.results is not None and self.results.get(key) is not None:
            return self.results[key]
        return self.config.get(key, default)

    @property
    def setting(self) -> str:
        data = self.config.get("DATA") or {}
        fallback = f"{data.get('NAME', '?')}_N{data.get('NUM_L', '?')}"
        return str(self.get("setting") or fallback)

    @property
    def method(self) -> str:
        """The folder above ``seed<N>`` (every sweep's ``<method>/seed<s>`` layout), else
        the label the run recorded (``flexmatch+bms+dls``), else its algorithm."""
        folder = os.path.basename(os.path.normpath(self.path))
        if SEED_FOLDER.match(folder):
            return os.path.basename(os.path.dirname(os.path.normpath(self.path))) or folder
        recorded = (self.diagnostics or {}).get("method")
        return str(recorded or self.get("algorithm", "?"))

    @property
    def label(self) -> str:
        return f"{self.method} {self.setting} seed {self.get('seed', '?')}"

    @property
    def classnames(self) -> list[str]:
        if self.diagnostics is not None:
            return self.diagnostics["classnames"]
        n = max((len(e.get("per_class_acc", [])) for e in self.history), default=0)
        return [str(i) for i in range(n)]

    def labeled_counts(self) -> list[int] | None:
        """Labeled images per class, from the run's split.json (None without one)."""
        path = os.path.join(self.path, "split.json")
        if not os.path.isfile(path):
            return None
        counts = _read_json(path).get("labeled_per_class")
        return counts if isinstance(counts, list) else None

    def last_value(self, key: str) -> float | None:
        """The last epoch's ``key`` (``balanced_acc``, ``head_acc``, ...): as recorded,
        else the groups' accuracies from its per-class accuracy and the labeled counts of
        its split.json (a run recorded before they were); None where it has none (a
        balanced split has no head or tail)."""
        last = self.history[-1]
        if key in last or not key.endswith("_acc") or "per_class_acc" not in last:
            return last.get(key)
        counts = self.labeled_counts()
        groups = class_groups(counts[:len(last["per_class_acc"])]) if counts else None
        return group_accuracies(last["per_class_acc"], groups).get(key) if groups else None

    def score(self, metric: str) -> float | None:
        """The number a sweep table shows for ``metric`` (finessl/report/sweep.py METRICS):
        the last or best top-1, or a last-epoch class-level accuracy."""
        key = METRICS[metric]
        return self.summary().get(key) if key.endswith("_top1") else self.last_value(key)

    def summary(self) -> dict:
        """The test top-1 and epoch of each way of choosing the epoch (last, best_val,
        best_test: :func:`finessl.engine.diagnostics.summary`), from the history so far;
        results.json's figures where the run finished (an older one's ``best_top1`` is
        its best_test)."""
        out = summary(self.history)
        if self.results is not None:
            out.update({k: v for k, v in self.results.items() if k in out})
            out.update(best_test_top1=self.results["best_top1"],
                       best_test_epoch=self.results["best_epoch"])
        return out


def is_run(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, n)) for n in (RESULTS, DIAGNOSTICS))


def load_run(folder: str) -> Run:
    results = diagnostics = None
    if os.path.isfile(os.path.join(folder, RESULTS)):
        results = read_results(os.path.join(folder, RESULTS))
    if os.path.isfile(os.path.join(folder, DIAGNOSTICS)):
        diagnostics = read_diagnostics(os.path.join(folder, DIAGNOSTICS))
    config, text = {}, ""
    path = os.path.join(folder, RUN_CONFIG)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            config = yaml.safe_load(text) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise UserError(f"{path} is not a readable YAML file ({why})") from None
        if not isinstance(config, dict):
            raise UserError(f"{path} is not a FineSSL config: a mapping was expected")
    return Run(folder, results, diagnostics, config, text)


def find_runs(paths: list[str]) -> list[Run]:
    """The runs named: run folders, and folders holding runs at any depth (a sweep)."""
    runs, seen = [], set()
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"{path}: no such folder")
        if not os.path.isdir(path):
            raise UserError(f"{path} is not a folder (a run folder or a folder of runs)")
        folders = [path] if is_run(path) else _runs_below(path)
        if not folders:
            raise UserError(f"{path} holds no FineSSL run: no {RESULTS} or {DIAGNOSTICS} in it "
                            f"or in any folder below it")
        for folder in folders:
            real = os.path.realpath(folder)
            if real not in seen:
                seen.add(real)
                runs.append(load_run(folder))
    return runs


def _runs_below(root: str) -> list[str]:
    found = []
    for folder, dirnames, _ in os.walk(root):
        dirnames.sort()
        if is_run(folder):
            found.append(folder)
            dirnames[:] = []  # a run's own sub-folders (tensorboard/) hold no runs
    return found
