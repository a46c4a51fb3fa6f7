"""The interface between the engine and the algorithms: what the engine reads of an
algorithm is declared on ``Algorithm`` (a class with only ``train_step`` runs through
every record and diagnostics path), a step's batch is a named ``Batch``, and a stop
or divergence closes the progress bar before its line is logged."""
from __future__ import annotations

import json
import logging
import os
import re
import signal

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, tiny_args
from finessl.algorithms.base import ALGORITHMS, Algorithm
from finessl.config_load import load_config
from finessl.engine import signals, trainer as trainer_module
from finessl.engine.batches import LABELED_FIELDS, UNLABELED_FIELDS, Batch
from finessl.engine.diagnostics import DIAGNOSTICS
from finessl.engine.guard import Diverged
from finessl.engine.trainer import Trainer
from finessl.logs import PROGRESS


class Minimal(Algorithm):
    """Nothing but a train step: the labeled loss of the main head. Records the batches
    it is handed."""

    seen: list = []

    def train_step(self, batch):
        Minimal.seen.append(batch)
        loss = F.cross_entropy(self.model.classify(batch.x), batch["y"])
        return loss, {"loss/total": loss.detach()}


def _trainer(cifar_root, folder, algorithm="fixmatch", **overrides):
    settings = dict(num_epochs=1, total_steps=4, print_freq=2, seed=3, algorithm=algorithm)
    cfg = load_config(None, tiny_args(cifar_root, str(folder), **{**settings, **overrides}))
    return Trainer(cfg, str(folder), seed=3)


# ---- what the engine reads of an algorithm ---------------------------------------------
def test_the_base_class_declares_what_the_engine_reads():
    assert (Algorithm.bms, Algorithm.dls, Algorithm.stats) == (False, False, None)
    assert Algorithm.uses_finessl_components is False
    minimal = Minimal.__new__(Minimal)
    assert minimal.pseudo_label_memory() is None and minimal.method_label() == "base"


def test_a_class_with_only_train_step_runs_through_records_and_diagnostics(
        cifar_root, tmp_path, forget_plugins):
    ALGORITHMS.register("minimal")(Minimal)
    Minimal.seen = []
    trainer = _trainer(cifar_root, tmp_path, algorithm="minimal")
    summary = trainer.fit()
    assert summary["last_epoch"] == 1 and 0.0 <= summary["last_top1"] <= 1.0
    assert len(Minimal.seen) == 4
    batch = Minimal.seen[0]
    assert isinstance(batch, Batch) and batch["x"] is batch.x
    # uses_unlabeled: every field but the views no one asked for (x_s, u_m)
    assert list(batch) == [f for f in (*LABELED_FIELDS, *UNLABELED_FIELDS)
                           if f not in ("x_s", "u_m")]
    assert batch.x.shape[0] == 8 and batch.u_w.shape == batch.x.shape  # BATCH_SIZE 8, MU_U 1
    with open(os.path.join(tmp_path, DIAGNOSTICS)) as f:
        record = json.load(f)
    assert record["method"] == "minimal" and record["aux_trained"] is False
    entry = record["history"][0]
    assert entry["epoch"] == 1 and entry["top1"] == summary["last_top1"]
    # no pseudo-label memory, no confidence histograms: nothing of theirs recorded
    assert not {"confidence", "pseudo_acc", "pseudo_counts", "pseudo_ood_kept"} & set(entry)
    assert list(entry["train"]) == ["loss/total"] and entry["train"]["loss/total"] > 0
    assert record["confusion"] is not None and len(record["confusion"]) == 10


def test_pseudo_labelling_algorithms_say_what_they_have(cifar_root, tmp_path):
    fixmatch = _trainer(cifar_root, tmp_path, algorithm="fixmatch", dls=True).algorithm
    assert (fixmatch.bms, fixmatch.dls) == (False, True) and fixmatch.stats is not None
    assert fixmatch.method_label() == "fixmatch+dls"
    assert fixmatch.pseudo_label_memory().shape == (fixmatch.num_unlabeled,)


def test_the_engine_and_the_report_never_probe_an_algorithm():
    probes = []
    for package in ("engine", "report"):
        folder = os.path.join(REPO, "finessl", package)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    probes += [f"{package}/{name}: {line.strip()}" for line in f
                               if re.search(r"(getattr|hasattr)\([^)]*algorithm", line)]
    assert probes == []


# ---- the batch ------------------------------------------------------------------------
def test_batch_names_the_loaders_fields_in_their_order():
    labeled = (torch.zeros(2, 3), torch.tensor([1, 2]), torch.tensor([5, 6]))
    unlabeled = tuple(torch.full((2,), float(i)) for i in range(6))
    batch = Batch.from_loaders((labeled, unlabeled))
    assert [batch[k][0].item() for k in UNLABELED_FIELDS] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert batch.y.tolist() == [1, 2] and batch.x_idx.tolist() == [5, 6]
    assert len(batch) == 9 and dict(batch)["u_true"] is batch.u_true and "x_s" not in batch
    only_labeled = Batch.from_loaders((labeled,))
    assert list(only_labeled) == ["x", "y", "x_idx"] and only_labeled.u_w is None
    assert "u_w" not in only_labeled
    with pytest.raises(KeyError):
        only_labeled["u_w"]
    for wrong in ((labeled, unlabeled[:4]), (labeled, unlabeled + unlabeled[:1]),
                  (labeled[:1],)):  # a loader that yields another number of fields
        with pytest.raises(ValueError, match="fields"):
            Batch.from_loaders(wrong)


# ---- the progress bar closes before the line that says why the run ended ---------------
class _Events(logging.Handler):
    def __init__(self, events):
        super().__init__()
        self.events = events

    def emit(self, record):
        self.events.append(record.levelname)


@pytest.mark.parametrize("ending", ["signal", "divergence"])
def test_the_bar_is_closed_before_the_stop_or_error_line(cifar_root, tmp_path, monkeypatch,
                                                         ending):
    events: list[str] = []

    class Bar(trainer_module.tqdm):
        def close(self):
            if not events or events[-1] != "close":
                events.append("close")
            super().close()

    monkeypatch.setattr(trainer_module, "tqdm", Bar)
    handler = _Events(events)
    logging.getLogger(PROGRESS).addHandler(handler)
    trainer = _trainer(cifar_root, tmp_path)
    step, calls = trainer.algorithm.train_step, [0]

    def at_step_two(batch):
        calls[0] += 1
        loss, logs = step(batch)
        if calls[0] == 2 and ending == "signal":
            os.kill(os.getpid(), signal.SIGUSR1)
        if calls[0] == 2 and ending == "divergence":
            loss = loss * float("nan")
        return loss, logs
    trainer.algorithm.train_step = at_step_two
    expected = signals.Preempted if ending == "signal" else Diverged
    try:
        with signals.handling(), pytest.raises(expected) as e:
            trainer.fit()
    finally:
        logging.getLogger(PROGRESS).removeHandler(handler)
    assert "step 2/4" in str(e.value)
    line = "WARNING" if ending == "signal" else "ERROR"
    assert line in events and "close" in events[:events.index(line)], events
