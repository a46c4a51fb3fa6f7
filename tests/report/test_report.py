"""The run report: what runs record for it (out-of-class images counted apart, on
hand-made batches), and ``main.py report`` on a tiny real run and a tiny two-run
sweep: every figure is a PNG that decodes, the HTML embeds and links each, and the
numbers of its tables are those of results.json. Bad run folders are one line, exit 2."""
from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import statistics
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from conftest import main_inprocess, tiny_args
from finessl.config import get_cfg_defaults
from finessl.engine import diagnostics
from finessl.engine.device import Precision
from finessl.engine.evaluate import evaluate
from finessl.metrics import CATEGORIES, expected_calibration_error, reliability_bins
from finessl.algorithms import build_algorithm
from helpers import TableModel, assert_user_error, id_images

L = math.log
RUN_FIGURES = ("curves", "pace", "confidence", "reliability", "per_class")


# ---- what a step and an epoch record, with out-of-class images (-2) -------------------
def _ood_batch():
    """FlexMatch before any memory (every threshold 0: all six pseudo-labels kept; the
    confident ones, conf >= 0.7, selected), 3 classes. Weak views are ids 1-6:
    (main-head probabilities, aux-head probabilities, true label)."""
    weak = [((0.92, 0.04, 0.04), (0.66, 0.17, 0.17), 0),     # u0: pl 0, correct, selected
            ((0.09, 0.82, 0.09), (0.20, 0.28, 0.52), 2),     # u1: pl 1, wrong, selected
            ((0.77, 0.13, 0.10), (0.44, 0.28, 0.28), -2),    # u2: pl 0, out of class, selected
            ((0.24, 0.52, 0.24), (0.36, 0.32, 0.32), -2),    # u3: pl 1, out of class
            ((0.035, 0.035, 0.93), (0.10, 0.13, 0.77), -1),  # u4: pl 2, class unknown, selected
            ((0.42, 0.29, 0.29), (0.58, 0.21, 0.21), 0)]     # u5: pl 0, correct
    main_rows = [[2.0, 0.0, 0.0]] + [[L(p) for p in m] for m, _, _ in weak] + [[0.0] * 3] * 12
    aux_rows = [[0.0] * 3] + [[L(p) for p in a] for _, a, _ in weak] + [[0.0] * 3] * 12
    cfg = get_cfg_defaults()
    cfg.algorithm = "flexmatch"
    model = TableModel(torch.tensor(main_rows), torch.tensor(aux_rows))
    algorithm = build_algorithm(cfg, model, 3, 6, torch.device("cpu"))
    batch = {"x": id_images([0]), "y": torch.tensor([0]), "u_w": id_images(range(1, 7)),
             "u_s1": id_images(range(7, 13)), "u_s2": id_images(range(13, 19)),
             "u_idx": torch.arange(6), "u_true": torch.tensor([t for _, _, t in weak])}
    return algorithm, batch


def test_step_logs_count_out_of_class_images_apart():
    algorithm, batch = _ood_batch()
    _, logs = algorithm.train_step(batch)
    assert logs["pseudo/mask_rate"].item() == 1.0
    assert logs["pseudo/acc_all"].item() == pytest.approx(2 / 3)  # u0, u5 right of u0, u1, u5
    assert logs["pseudo/acc_masked"].item() == pytest.approx(2 / 3)
    assert logs["pseudo/ood_masked"].item() == pytest.approx(2 / 5)  # u2, u3 of u0-u3, u5
    assert logs["pseudo/ood_selected"].item() == pytest.approx(1 / 3)  # u2 of u0, u1, u2


def test_step_histograms_put_each_confidence_in_its_category_and_bin():
    algorithm, batch = _ood_batch()
    algorithm.train_step(batch)
    record = algorithm.stats.record()
    nonzero = {head: {c: [b for b, n in enumerate(record[head][c]) for _ in range(n)]
                      for c in CATEGORIES} for head in ("main", "aux")}
    # bins of width 0.05: 0.92 -> 18, 0.42 -> 8, 0.82 -> 16, 0.77 -> 15, 0.52 -> 10, 0.93 -> 18
    assert nonzero["main"] == {"correct": [8, 18], "wrong": [16], "out_of_class": [10, 15],
                               "unknown": [18]}
    # the aux head's top probability: 0.66, 0.58 | 0.52 | 0.44, 0.36 | 0.77
    assert nonzero["aux"] == {"correct": [11, 13], "wrong": [10], "out_of_class": [7, 8],
                              "unknown": [15]}
    assert record["kept"] == {"correct": 2, "wrong": 1, "out_of_class": 2, "unknown": 1}
    assert diagnostics.kept_ood_share(record) == pytest.approx(2 / 5)
    state = algorithm.state_dict()  # checkpointed with the algorithm: a resume keeps them
    algorithm.on_epoch_start(1)
    assert algorithm.stats.record()["kept"]["correct"] == 0
    algorithm.load_state_dict(state)
    assert algorithm.stats.record() == record


def test_epoch_memory_record_counts_out_of_class_apart():
    memory = torch.tensor([0, 1, 0, -1, 2, -1])  # what the step above leaves
    truth = torch.tensor([0, 2, -2, -2, -1, 0])
    record = diagnostics.memory_record(memory, truth, 3)
    assert record["pseudo_acc"] == 0.5  # u0 right, u1 wrong; u2 (-2) and u4 (-1) not counted
    assert record["pseudo_ood"] == pytest.approx(1 / 3)  # u2 of u0, u1, u2
    assert record["pseudo_rate"] == pytest.approx(4 / 6)
    assert record["pseudo_counts"] == [2, 1, 1]
    algorithm, batch = _ood_batch()
    algorithm.train_step(batch)
    assert torch.equal(algorithm.pseudo_label_memory(), memory)


def test_epoch_means_weight_each_window_by_its_steps():
    means = diagnostics.EpochMeans()
    means.add({"loss/total": 1.0}, epoch=0, step=1, done=2)  # steps 0-1
    means.add({"loss/total": 4.0}, epoch=0, step=4, done=5)  # steps 2-4
    assert means.pop() == {"loss/total": pytest.approx((2 * 1.0 + 3 * 4.0) / 5)}
    means.add({"loss/total": 2.0}, epoch=1, step=6, done=3)  # resumed at step 4 of epoch 1
    assert means.pop() == {"loss/total": 2.0} and means.pop() == {}


def _algorithm(name: str, **settings):
    """An algorithm built on the tiny table model, with config ``settings``."""
    cfg = get_cfg_defaults()
    cfg.algorithm = name
    for key, value in settings.items():
        setattr(cfg, key, value)
    model = TableModel(torch.zeros(1, 3), torch.zeros(1, 3))
    return build_algorithm(cfg, model, 3, 6, torch.device("cpu"))


def test_method_label_names_the_components_switched_from_the_default():
    assert _algorithm("flexmatch", bms=True, dls=True).method_label() == "flexmatch+bms+dls"
    assert _algorithm("finessl", bms=True, dls=False).method_label() == "finessl-dls"
    assert _algorithm("finessl").method_label() == "finessl"
    assert _algorithm("supervised").method_label() == "supervised"


def ece_from_bins(bins: dict[str, list]) -> float:
    """The reference: ECE of :func:`reliability_bins`' counts, the sum over bins of
    |accuracy - confidence| times the bin's share of the predictions. The reliability
    diagram draws those bins beside the recorded ECE, so the two must agree."""
    total = sum(bins["count"])
    return sum(abs(hits - conf) for n, conf, hits in
               zip(bins["count"], bins["conf_sum"], bins["correct"]) if n) / max(total, 1)


def test_evaluation_gives_both_heads_reliability_and_the_confusion_matrix():
    main_rows = torch.tensor([[L(0.9), L(0.05), L(0.05)], [L(0.3), L(0.6), L(0.1)],
                              [L(0.2), L(0.2), L(0.6)], [L(0.8), L(0.1), L(0.1)]])
    aux_rows = torch.tensor([[L(0.5), L(0.3), L(0.2)], [L(0.2), L(0.7), L(0.1)],
                             [L(0.1), L(0.2), L(0.7)], [L(0.3), L(0.4), L(0.3)]])
    loader = [(id_images([0, 1]), torch.tensor([0, 1])), (id_images([2, 3]), torch.tensor([1, 2]))]
    result = evaluate(TableModel(main_rows, aux_rows), loader, torch.device("cpu"),
                      Precision("fp32", torch.device("cpu")), 3)
    assert result["top1"] == 0.5 and result["top1_aux"] == 0.5  # main: 0, 1 right; aux: 0, 1
    assert result["confusion"] == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    main_bins = result["reliability"]["main"]
    assert sum(main_bins["count"]) == 4 and sum(main_bins["correct"]) == 2
    assert main_bins["count"][13] == 1 and main_bins["correct"][13] == 1  # 0.9 in (13/15, 14/15]
    # ECE from the recorded bins is the ECE of the predictions
    assert ece_from_bins(main_bins) == pytest.approx(result["ece"], abs=1e-6)
    assert ece_from_bins(result["reliability"]["aux"]) == pytest.approx(result["ece_aux"], abs=1e-6)
    conf = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    correct = torch.rand(1000, generator=torch.Generator().manual_seed(1)) < conf
    assert ece_from_bins(reliability_bins(conf, correct)) == pytest.approx(
        expected_calibration_error(conf, correct), abs=1e-5)


# ---- main.py report on real runs --------------------------------------------------------
class Page(HTMLParser):
    """Tables (class -> rows of cell texts), links, embedded images and <pre> text."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links, self.images, self.pre = [], [], ""
        self._table = self._cell = None
        self._in_pre = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "pre":
            self._in_pre = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table is not None:
            self._table[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_pre:
            self.pre += data


def _report(args) -> tuple[int, str, str]:
    return main_inprocess(["report", *args])


def _check_figures(folder: str, names, page: Page) -> None:
    """Each PNG exists, decodes, is linked, and its bytes are embedded in the page."""
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in page.images}
    for name in names:
        path = os.path.join(folder, "figures", f"{name}.png")
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) > 100, name
        assert f"figures/{name}.png" in page.links, name
        with open(path, "rb") as f:
            assert f.read() in embedded, name
    pngs = sorted(os.listdir(os.path.join(folder, "figures")))
    assert pngs == sorted(f"{n}.png" for n in names)


@pytest.fixture(scope="module")
def sweep(cifar_root, tmp_path_factory):
    """Two seeds of FineSSL, 2 epochs of 3 steps each, in a sweep's layout."""
    root = str(tmp_path_factory.mktemp("sweep"))
    for seed in (1, 2):
        out = os.path.join(root, "tiny_N4", "finessl", f"seed{seed}")
        code, _, err = main_inprocess(tiny_args(cifar_root, out, num_epochs=2, total_steps=3,
                                                print_freq=2, seed=seed, setting="tiny_N4",
                                                paper_top1=97.39), rasterise=False,
                                      epoch_figures=True)
        assert code == 0, err
    return root


def _results(run: str) -> dict:
    with open(os.path.join(run, "results.json")) as f:
        return json.load(f)


@pytest.mark.figures  # looks at the drawn PNGs
@pytest.mark.slow  # two tiny runs, then the report
def test_report_of_one_run(sweep, tmp_path):
    run, out = os.path.join(sweep, "tiny_N4", "finessl", "seed1"), str(tmp_path / "one")
    code, printed, err = _report([run, "--out", out])
    assert code == 0, err
    assert printed.strip() == os.path.join(out, "report.html")
    page = Page(open(os.path.join(out, "report.html"), encoding="utf-8").read())
    _check_figures(out, RUN_FIGURES, page)
    results = _results(run)
    summary = dict(row for row in page.tables["summary"][1:])
    assert summary["best test top-1 (%)"] == f"{100 * results['best_top1']:.2f}"
    assert summary["last test top-1 (%)"] == f"{100 * results['last_top1']:.2f}"
    assert summary["best epoch"] == str(results["best_epoch"])
    last = results["history"][-1]
    assert summary["balanced accuracy, last epoch (%)"] == f"{100 * last['balanced_acc']:.2f}"
    assert summary["ECE, main head, last epoch"] == f"{last['ece']:.4f}"
    assert summary["ECE, aux head, last epoch"] == f"{last['ece_aux']:.4f}"
    assert summary["pseudo-label accuracy, last epoch (%)"] == f"{100 * last['pseudo_acc']:.2f}"
    assert summary["paper top-1 for this setting (%)"] == "97.39"
    split = json.load(open(os.path.join(run, "split.json")))
    assert summary["split sha256"] == split["sha256"]
    epochs = page.tables["epochs"][1:]
    assert [row[:2] for row in epochs] == [[str(e["epoch"]), f"{100 * e['top1']:.2f}"]
                                           for e in results["history"]]
    classes = page.tables["classes"][1:]
    assert [row[1] for row in classes] == [f"{100 * a:.2f}" for a in last["per_class_acc"]]
    assert [int(row[2]) for row in classes] == last["pseudo_counts"]
    assert page.pre == open(os.path.join(run, "config.yaml")).read()
    # every epoch also went to tensorboard as images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(os.path.join(run, "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert {"report/confidence", "report/reliability", "report/pace",
            "report/per_class"} <= set(images)
    assert [e.step for e in events.Images("report/confidence")] == [1, 2]
    # and the confidences as histograms, per head and category, with the epoch's counts
    histograms = EventAccumulator(os.path.join(run, "tensorboard"),
                                  size_guidance={"histograms": 0})
    histograms.Reload()
    for head in ("main", "aux"):
        for category, counts in last["confidence"][head].items():
            tag = f"pseudo/confidence/{head}/{category}"
            if not sum(counts):
                assert tag not in histograms.Tags()["histograms"]
                continue
            value = histograms.Histograms(tag)[-1]
            assert value.step == 2 and value.histogram_value.num == sum(counts)
            assert list(value.histogram_value.bucket) == counts

@pytest.mark.figures  # looks at the drawn PNGs
@pytest.mark.slow  # two tiny runs, then the report
def test_report_of_a_sweep_and_of_a_run_in_progress(sweep, tmp_path):
    out = str(tmp_path / "sweep")
    code, _, err = _report([sweep, "--out", out, "--epochs", "2"])
    assert code == 0, err
    page = Page(open(os.path.join(out, "report.html"), encoding="utf-8").read())
    _check_figures(out, ("sweep_bars", "sweep_curves"), page)
    last = [100 * _results(os.path.join(sweep, "tiny_N4", "finessl", f"seed{s}"))["last_top1"]
            for s in (1, 2)]
    header, *rows = page.tables["sweep"]
    assert header == ["method", "tiny_N4"]
    mean_std = f"{statistics.fmean(last):.2f} ± {statistics.stdev(last):.2f} (n=2)"
    assert rows == [["finessl", mean_std], ["FineSSL (paper)", "97.39"]]
    # choosing without peeking (main.py select's table): the oracle last, its gap 0
    header, *picks = page.tables["select0"]
    assert header[0] == "rule" and picks[-1][0].startswith("test top-1 (oracle")
    every_epoch = [100 * e["top1"] for s in (1, 2) for e in _results(
        os.path.join(sweep, "tiny_N4", "finessl", f"seed{s}"))["history"]]
    assert picks[-1][4] == "+0.00" and picks[-1][3] == f"{max(every_epoch):.2f}"
    assert any(row[0].startswith("rank aggregate") for row in picks)
    for seed in (1, 2):
        link = f"runs/seed{seed}/report.html"
        assert link in page.links
        run_page = Page(open(os.path.join(out, link), encoding="utf-8").read())
        _check_figures(os.path.join(out, "runs", f"seed{seed}"), RUN_FIGURES, run_page)
    # a run still training (no results.json yet) is reported from diagnostics.json
    running = str(tmp_path / "running")
    shutil.copytree(os.path.join(sweep, "tiny_N4", "finessl", "seed2"), running)
    os.unlink(os.path.join(running, "results.json"))
    code, _, err = _report([running, "--out", str(tmp_path / "r")])
    assert code == 0, err
    text = open(tmp_path / "r" / "report.html", encoding="utf-8").read()
    summary = dict(row for row in Page(text).tables["summary"][1:])
    assert summary["state"] == "in progress (epoch 2 recorded)"
    assert summary["last test top-1 (%)"] == f"{last[1]:.2f}"


@pytest.mark.figures  # looks at the drawn PNGs
def test_a_run_of_an_older_finessl_still_gets_every_figure(tmp_path):
    """results.json alone, its history without the report's records: the figures say
    'not recorded' where they have nothing, the tables hold what there is."""
    run = tmp_path / "old"
    run.mkdir()
    history = [{"epoch": e, "top1": 0.2 * e, "balanced_acc": 0.1 * e, "ece": 0.05,
                "per_class_acc": [0.5, float("nan")], "pseudo_acc": 0.4} for e in (1, 2)]
    (run / "results.json").write_text(json.dumps(
        {"best_top1": 0.4, "best_epoch": 2, "last_top1": 0.4, "last_epoch": 2,
         "algorithm": "fixmatch", "seed": 3, "history": history}))
    code, _, err = _report([str(run)])
    assert code == 0, err
    page = Page((run / "report" / "report.html").read_text(encoding="utf-8"))
    _check_figures(str(run / "report"), RUN_FIGURES, page)
    summary = dict(row for row in page.tables["summary"][1:])
    assert summary["last test top-1 (%)"] == "40.00" and summary["seed"] == "3"
    assert summary["split sha256"] == "not recorded"
    assert [row[1] for row in page.tables["classes"][1:]] == ["50.00", "–"]


def _history():
    return [{"epoch": 1, "top1": 0.5, "per_class_acc": [0.5, 0.5]}]


MALFORMED = {  # what the folder holds -> what the one line names
    "missing": (None, "no such folder"),
    "empty": ({}, "holds no FineSSL run"),
    "not json": ({"results.json": "{'best_top1': 0.5"}, "results.json is not JSON"),
    "no top-1": ({"results.json": {"best_top1": 0.5, "history": _history()}},
                 "no numeric 'last_top1'"),
    "no history": ({"results.json": {"best_top1": 0.5, "last_top1": 0.5, "best_epoch": 1,
                                     "last_epoch": 1, "history": []}}, "non-empty list"),
    "bad epoch": ({"diagnostics.json": {"format": 1, "classnames": ["a", "b"],
                                        "history": [{"epoch": 1, "top1": "high"}]}},
                  "history entry 0 has no numeric"),
    "newer format": ({"diagnostics.json": {"format": 99, "history": _history()}}, "format 99"),
    "bad confusion": ({"diagnostics.json": {"format": 1, "classnames": ["a", "b"],
                                            "history": _history(), "confusion": [[1]]}},
                      "2 x 2 matrix"),
    "bad config": ({"results.json": {"best_top1": 0.5, "last_top1": 0.5, "best_epoch": 1,
                                     "last_epoch": 1, "history": _history()},
                    "config.yaml": "DATA: [unclosed"}, "config.yaml is not a readable YAML"),
    "bad record": ({"results.json": {"best_top1": 0.5, "last_top1": 0.5, "best_epoch": 1,
                                     "last_epoch": 1, "history": [
                                         {"epoch": 1, "top1": 0.5, "confidence": {"bins": 2}}]}},
                   "its records cannot be drawn"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_missing_or_malformed_run_folders_are_one_line_exit_2(case, tmp_path):
    files, expected = MALFORMED[case]
    run = tmp_path / "run"
    if files is not None:
        run.mkdir()
        for name, content in files.items():
            (run / name).write_text(content if isinstance(content, str) else json.dumps(content))
    code, _, err = _report([str(run), "--out", str(tmp_path / "out")])
    line = assert_user_error(code, err, expected, str(run), only_line=True)
    assert re.search(re.escape(str(run)), line)


def test_the_report_reads_the_results_file_the_trainer_writes():
    from finessl.engine.run import RESULTS
    from finessl.report.runs import RESULTS as READ
    assert READ == RESULTS


# ---- FineSSL against each method, paired by seed ---------------------------------------
PAIRED = {  # method -> {seed: last top-1 in %}; FineSSL minus each, worked out by hand:
    "finessl": {1: 70.0, 2: 72.0, 3: 74.0},
    "fixmatch": {1: 69.0, 2: 70.0, 3: 71.0},    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3)
    "supervised": {1: 64.5, 2: 66.0, 3: 68.5},  # d = 5.5, 6, 5.5: mean 5.667, sd 0.2887
    "flexmatch": {1: 80.0, 2: 81.0, 4: 60.0},   # seeds 1, 2 only: d = -10, -9, t(1) = 12.706
    "softmatch": {1: 71.0, 5: 50.0},            # one common seed: no row
}


def test_t_quantile_is_the_table_then_within_its_accuracy():
    from finessl.report.sweep import t_quantile
    assert t_quantile(2) == 4.303 and t_quantile(10) == 2.228
    for df, table in ((11, 2.201), (15, 2.131), (20, 2.086), (30, 2.042), (120, 1.980)):
        assert abs(t_quantile(df) - table) < 0.003, df


def test_the_paired_table_of_a_sweep_is_worked_out_from_results_json(tmp_path,
                                                                    figures_not_rasterised):
    for method, seeds in PAIRED.items():
        for seed, top1 in seeds.items():
            run = tmp_path / "toy_N4" / method / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "results.json").write_text(json.dumps(
                {"best_top1": top1 / 100, "best_epoch": 1, "last_top1": top1 / 100,
                 "last_epoch": 1, "seed": seed, "setting": "toy_N4", "algorithm": method,
                 "history": [{"epoch": 1, "top1": top1 / 100}]}))
    code, _, err = _report([str(tmp_path), "--out", str(tmp_path / "report")])
    assert code == 0, err
    page = Page((tmp_path / "report" / "report.html").read_text(encoding="utf-8"))
    half = {"fixmatch": 4.303 / math.sqrt(3), "supervised": 4.303 * 0.288675 / math.sqrt(3),
            "flexmatch": 12.706 * math.sqrt(0.5) / math.sqrt(2)}
    assert page.tables["paired"] == [
        ["setting", "method", "seeds", "finessl − method", "95 % CI", "at 95 %"],
        ["toy_N4", "supervised", "3", "+5.67",
         f"[{5.6667 - half['supervised']:+.2f}, {5.6667 + half['supervised']:+.2f}]",
         "finessl ahead"],
        ["toy_N4", "fixmatch", "3", "+2.00",
         f"[{2 - half['fixmatch']:+.2f}, {2 + half['fixmatch']:+.2f}]", "not significant"],
        ["toy_N4", "flexmatch", "2", "-9.50",
         f"[{-9.5 - half['flexmatch']:+.2f}, {-9.5 + half['flexmatch']:+.2f}]",
         "finessl behind"]]
    assert page.tables["paired"][2][4] == "[-0.48, +4.48]"  # 2 -+ 4.303 / sqrt(3)
    # any method against chosen others: the sweep script's BMS + DLS against plain rows
    from finessl.report import sweep as tables
    from finessl.report.runs import find_runs
    header, rows = tables.paired(find_runs([str(tmp_path / "toy_N4")]), "last", "fixmatch",
                                 ["supervised"])
    assert header[3] == "fixmatch − method"
    assert rows == [["toy_N4", "supervised", "3", "+3.67",  # d = 4.5, 4, 2.5: sd 1.0408
                     f"[{3.6667 - 4.303 * 1.040833 / math.sqrt(3):+.2f}, "
                     f"{3.6667 + 4.303 * 1.040833 / math.sqrt(3):+.2f}]", "fixmatch ahead"]]
    assert rows[0][4] == "[+1.08, +6.25]"
