"""Class-level accuracy of long-tailed runs: head / medium / tail groups, per-class
precision, and the sweep tables' class-level metrics, checked by hand."""
from __future__ import annotations

import argparse
import json
import math

import pytest

from finessl.metrics import class_groups, group_accuracies, per_class_precision
from finessl.report import cli, sweep
from finessl.report.runs import METRICS, find_runs


def test_groups_are_thirds_by_labeled_count_most_first():
    # CIFAR-10-LT, ratio 100 from 1500: ceil(10/3) = 4 head, 2 medium, 4 tail classes
    counts = [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
    assert class_groups(counts) == {"head": [0, 1, 2, 3], "medium": [4, 5],
                                    "tail": [6, 7, 8, 9]}
    # a reversed or shuffled profile: by count, not by class index; ties by index
    assert class_groups([1, 9, 5, 5, 2, 7]) == {"head": [1, 5], "medium": [2, 3],
                                                "tail": [0, 4]}
    assert class_groups([4, 4, 4]) is None  # balanced: no head or tail


def test_group_accuracy_is_the_mean_over_the_groups_classes():
    per_class = [0.9, 0.8, 0.6, 0.5, float("nan"), 0.1]
    groups = {"head": [0, 1], "medium": [2, 4], "tail": [3, 5]}
    got = group_accuracies(per_class, groups)
    assert got["head_acc"] == pytest.approx(0.85) and got["medium_acc"] == pytest.approx(0.6)
    assert got["tail_acc"] == pytest.approx(0.3)  # the absent class (NaN) is left out
    assert math.isnan(group_accuracies([float("nan")] * 3, {
        "head": [0], "medium": [1], "tail": [2]})["tail_acc"])


def test_precision_per_class_from_the_confusion_matrix():
    confusion = [[3, 1, 0],   # true 0
                 [1, 2, 0],   # true 1
                 [2, 0, 0]]   # true 2: never predicted right, class 2 never predicted
    precision = per_class_precision(confusion)
    assert precision[:2] == pytest.approx([3 / 6, 2 / 3]) and math.isnan(precision[2])


def _lt_run(folder, seed, method, per_class, counts, recorded: bool):
    folder.mkdir(parents=True)
    last = {"epoch": 1, "top1": 0.5, "balanced_acc": sum(per_class) / len(per_class),
            "per_class_acc": per_class}
    if recorded:
        last.update(group_accuracies(per_class, class_groups(counts)))
    (folder / "results.json").write_text(json.dumps(
        {"best_top1": 0.5, "best_epoch": 1, "last_top1": 0.5, "last_epoch": 1,
         "seed": seed, "setting": "lt", "history": [last]}))
    (folder / "split.json").write_text(json.dumps({"labeled_per_class": counts}))


def test_sweep_tables_show_head_and_tail_of_old_and_new_runs(tmp_path):
    # a run recorded before the groups were gets them from its split.json's counts
    counts = [20, 10, 5, 2, 1, 1]
    for seed, recorded in ((1, True), (2, False)):
        _lt_run(tmp_path / "lt" / "fixmatch" / f"seed{seed}", seed, "fixmatch",
                [1.0, 0.9, 0.5, 0.4, 0.2 * seed, 0.0], counts, recorded)
    runs = find_runs([str(tmp_path)])
    assert [r.score("head") for r in runs] == pytest.approx([0.95, 0.95])
    assert [r.score("tail") for r in runs] == pytest.approx([0.1, 0.2])
    header, rows = sweep.table(runs, "tail")
    assert header == ["method", "lt"] and rows == [["fixmatch", "15.00 ± 7.07 (n=2)"]]
    assert sweep.table(runs, "balanced")[1] == [["fixmatch", "51.67 ± 2.36 (n=2)"]]  # (3.0 and 3.2) / 6


def test_the_reports_metric_choices_are_the_tables():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)  # written out there: `report --help` imports no torch
    choices = next(a.choices for a in parser._actions if a.dest == "metric")
    assert set(choices) == set(METRICS)


def test_an_epoch_of_a_long_tailed_run_records_its_groups_and_precision():
    from types import SimpleNamespace
    from finessl.algorithms.base import Algorithm
    from finessl.engine import diagnostics

    class Writer:
        def add_scalar(self, *a): pass
        def add_histogram(self, *a, **k): pass

    data = SimpleNamespace(labeled_counts=lambda: [4, 2, 1], num_classes=3)
    trainer = SimpleNamespace(
        data=data, algorithm=Algorithm.__new__(Algorithm), confusion=None, history=[],
        epoch_means=SimpleNamespace(pop=lambda: {}), dist=SimpleNamespace(is_main=False),
        run_dir=None, cfg=SimpleNamespace(num_epochs=1))
    result = {"top1": 0.5, "balanced_acc": 0.5, "ece": 0.1, "per_class_acc": [0.75, 0.5, 0.25],
              "confusion": [[3, 1, 0], [1, 1, 0], [0, 3, 1]]}
    diagnostics.record_epoch(trainer, 0, result, Writer())
    entry = trainer.history[0]
    assert (entry["head_acc"], entry["medium_acc"], entry["tail_acc"]) == (0.75, 0.5, 0.25)
    assert entry["per_class_precision"] == pytest.approx([0.75, 0.2, 1.0])
    summary = diagnostics.summary(trainer.history)  # results.json
    assert summary["last_tail_acc"] == 0.25 and summary["last_balanced_acc"] == 0.5
    assert summary["last_per_class_precision"] == entry["per_class_precision"]
