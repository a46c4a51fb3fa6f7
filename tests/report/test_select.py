"""``main.py select`` (finessl/report/select.py): each rule's pick among hand-written
run folders, the rank aggregate by hand, the oracle gap, and the supervised-twin
verdict from validation and from label-free signals (CPU, milliseconds)."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from conftest import main_inprocess
from finessl.report import select
from finessl.report.runs import find_runs


def write_run(folder, algorithm, seed, history, num_val=0, split="h", lr=0.03):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "diagnostics.json"), "w") as f:
        json.dump({"format": 1, "epoch": len(history), "classnames": ["a", "b"],
                   "split_hash": split, "num_val": num_val, "history": history}, f)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump({"algorithm": algorithm, "seed": seed, "lr": lr,
                        "DATA": {"NAME": "CIFAR10", "NUM_L": 4}}, f)
    return folder


def epoch(e, top1, val=None, **signals):
    entry = {"epoch": e, "top1": top1, "signals": signals}
    if val is not None:
        entry["val_top1"] = val
    return entry


@pytest.fixture
def sweep(tmp_path):
    write_run(str(tmp_path / "fixmatch" / "seed1"), "fixmatch", 1, [
        epoch(1, 0.50, 0.60, **{"main/entropy": 0.9, "main/confidence": 0.5}),
        epoch(2, 0.70, 0.55, **{"main/entropy": 0.2, "main/confidence": 0.6})], num_val=1000)
    write_run(str(tmp_path / "supervised" / "seed1"), "supervised", 1, [
        epoch(1, 0.40, 0.40, **{"main/entropy": 0.5, "main/confidence": 0.9}),
        epoch(2, 0.80, 0.45, **{"main/entropy": 0.4, "main/confidence": 0.7})], num_val=1000)
    return str(tmp_path)


def test_each_rule_picks_its_best_epoch_and_its_gap_to_the_oracle(sweep):
    picks = {p.rule: p for p in select.picks(find_runs([sweep]))}
    chosen = {rule: (p.run.get("algorithm"), p.entry["epoch"]) for rule, p in picks.items()}
    assert chosen[select.VALIDATION] == ("fixmatch", 1)
    assert chosen["signal main/entropy (lower)"] == ("fixmatch", 2)
    assert chosen["signal main/confidence (higher)"] == ("supervised", 1)
    assert chosen[select.ORACLE] == ("supervised", 2)
    # mean ranks (entropy, confidence): fixmatch 1 (4, 4), 2 (1, 3); supervised 1 (3, 1),
    # 2 (2, 2): fixmatch 2 and supervised 1 and 2 tie at 2, the first of them wins
    assert select.aggregate_ranks(select._candidates(find_runs([sweep])),
                                  ["main/confidence", "main/entropy"]) == [4, 2, 2, 2]
    assert chosen[select.AGGREGATE] == ("fixmatch", 2)


def test_ranks_share_ties():
    assert select._ranks([3.0, 1.0, 3.0, 0.5]) == [1.5, 3, 1.5, 4]


def test_unlabeled_helped_from_validation(sweep):
    ssl, twin = select.twins(find_runs([sweep]))[0]
    verdict = select.unlabeled_helped(ssl, twin)
    # 0.60 vs 0.45 on 1000 images: z = 0.15 / sqrt((.24 + .2475) / 1000) = 6.79
    assert verdict["answer"] == "yes" and verdict["confidence"] == "sure"
    assert verdict["source"] == "validation" and "z = +6.79" in verdict["evidence"]


def test_unlabeled_helped_from_signals_without_validation(tmp_path):
    ssl = write_run(str(tmp_path / "a"), "fixmatch", 2, [
        epoch(1, 0.1, **{"main/entropy": 0.1, "main/confidence": 0.9, "agree/weak_strong": 0.9,
                         "features/rankme": 5.0})])
    write_run(str(tmp_path / "b"), "supervised", 2, [
        epoch(1, 0.9, **{"main/entropy": 0.5, "main/confidence": 0.5, "agree/weak_strong": 0.5,
                         "features/rankme": 6.0})])
    runs = find_runs([str(tmp_path)])
    pairs = select.twins(runs)
    assert [(a.path, b.path) for a, b in pairs] == [(ssl, str(tmp_path / "b"))]
    verdict = select.unlabeled_helped(*pairs[0])
    assert verdict["answer"] == "yes" and verdict["confidence"] == "likely"
    assert verdict["evidence"].startswith("3 of 4 label-free signals")  # the test top-1: unread


def test_in_a_learning_rate_grid_the_twin_has_the_same_rate(tmp_path):
    for name, lr in (("sup_a", 0.01), ("sup_b", 0.03), ("sup_c", 0.1)):
        write_run(str(tmp_path / name), "supervised", 1, [epoch(1, 0.5)], lr=lr)
    ssl = write_run(str(tmp_path / "ssl"), "finessl", 1, [epoch(1, 0.5)], lr=0.1)
    pairs = select.twins(find_runs([str(tmp_path)]))
    assert [(a.path, b.path) for a, b in pairs] == [(ssl, str(tmp_path / "sup_c"))]


def test_no_twin_across_splits_or_seeds(tmp_path):
    write_run(str(tmp_path / "a"), "fixmatch", 1, [epoch(1, 0.5)], split="x")
    write_run(str(tmp_path / "b"), "supervised", 1, [epoch(1, 0.5)], split="y")
    write_run(str(tmp_path / "c"), "supervised", 2, [epoch(1, 0.5)], split="x")
    assert select.twins(find_runs([str(tmp_path)])) == []


def test_select_command_prints_and_writes(sweep, tmp_path):
    out = str(tmp_path / "out")
    code, stdout, err = main_inprocess(["select", sweep, "--out", out])
    assert code == 0, err
    assert "| validation top-1 | fixmatch CIFAR10_N4 seed 1 | 1 | 50.00 | -30.00 |" in stdout
    assert "oracle" in stdout and "Did the unlabeled data help?" in stdout
    record = json.load(open(os.path.join(out, "selection.json")))
    assert record["twins"][0]["answer"] == "yes"
    assert record["settings"]["CIFAR10_N4"][0]["gap_to_oracle"] == pytest.approx(-0.3)
    assert os.path.isfile(os.path.join(out, "selection.md"))


def test_the_selection_study_measures_each_rule_against_the_oracle_and_the_twin_truth(tmp_path):
    """benchmarks/selection_study.py on a hand-made grid: one (method, seed) group of two
    learning rates, and a supervised twin whose validation says the opposite of its test."""
    from benchmarks import selection_study

    def finished(folder, algorithm, lr, history):
        write_run(folder, algorithm, 1, history, num_val=1000, lr=lr)
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump({"algorithm": algorithm, "seed": 1, "lr": lr, "best_top1": 0.0,
                       "best_epoch": 1, "last_top1": 0.0, "last_epoch": 2,
                       "history": history}, f)
    finished(str(tmp_path / "fixmatch+lr0.01" / "seed1"), "fixmatch", 0.01,
             [epoch(1, 0.50, 0.60), epoch(2, 0.70, 0.55)])
    finished(str(tmp_path / "fixmatch+lr0.03" / "seed1"), "fixmatch", 0.03,
             [epoch(1, 0.60, 0.50), epoch(2, 0.65, 0.70)])
    finished(str(tmp_path / "supervised+lr0.01" / "seed1"), "supervised", 0.01,
             [epoch(1, 0.40, 0.40), epoch(2, 0.60, 0.45)])
    runs = find_runs([str(tmp_path)])
    gaps = selection_study.rule_gaps(runs)
    # fixmatch: the oracle is lr 0.01 epoch 2 (0.70); validation picks lr 0.03 epoch 2
    # (0.65): -5 points; the default recipe's last epoch is the oracle: 0; supervised: one
    # run, validation picks epoch 2, the oracle too
    assert gaps[select.VALIDATION] == pytest.approx([-5.0, 0.0])
    assert gaps[selection_study.DEFAULT] == pytest.approx([0.0, 0.0])
    low, high = selection_study.helped(runs)  # both against the one supervised run
    # lr 0.01: validation 0.60 vs 0.45 on 1000 images: yes, sure; the test top-1 at those
    # epochs 0.50 vs 0.60: no. No signals recorded: no label-free answer; last epochs
    # 0.70 vs 0.60: yes. lr 0.03: 0.70 vs 0.45: yes, sure; test 0.65 vs 0.60: yes
    assert low[1:] == ["yes (sure)", "no", "unknown (none)", "yes"]
    assert high[1:] == ["yes (sure)", "yes", "unknown (none)", "yes"]
    assert selection_study.agreement([low, high], 1, 2) == \
        "1 of 2 agree with the test labels (0 unclear)"
