"""The sweep scripts and the summary table, without training anything.

The sweeps run with ``PYTHON`` pointing at a fake interpreter that records its argv and
writes a results.json (or fails for chosen runs), so what is checked is exactly what a
sweep would hand to ``main.py``: arguments, skip / resume / start, failure handling.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARIZE = os.path.join(REPO, "scripts", "summarize.py")

pytestmark = pytest.mark.slow  # every test runs a script in a subprocess

FAKE_PYTHON = f"""#!{sys.executable}
# Stand-in for 'python main.py ARGS': records ARGS, then finishes the run folder
# (results.json) unless the folder contains $FAKE_FAIL, where it exits 1.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"cwd": os.getcwd(), "argv": args}}) + "\\n")
opts = dict(zip(args[3::2], args[4::2]))  # after 'REPO/main.py --cfg FILE'
run_dir = opts.get("resume", opts["output_dir"])
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in run_dir:
    sys.exit(1)
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump({{"best_top1": 0.5, "best_epoch": 1, "last_top1": 0.5, "last_epoch": 1}}, f)
"""


@pytest.fixture
def fake_python(tmp_path):
    """(path of the fake interpreter, path of its argv log)."""
    path = tmp_path / "fake_python"
    path.write_text(FAKE_PYTHON)
    path.chmod(0o755)
    return str(path), str(tmp_path / "calls.jsonl")


MAIN = os.path.join(REPO, "main.py")


def peft_config(name: str) -> str:
    return os.path.join(REPO, "configs", "peft", f"{name}.yaml")


def sweep(script: str, fake_python, cwd: str = REPO, **env):
    """``bash scripts/SCRIPT`` started in ``cwd`` with the fake interpreter: (proc,
    recorded calls). The script never changes directory: main.py runs where it started."""
    python, log = fake_python
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("SETTINGS", "CONFIGS", "METHODS", "VARIANTS", "SEEDS", "OUT",
                             "FAKE_FAIL")}
    full_env.update(PYTHON=python, FAKE_LOG=log)
    extra = env.pop("args", [])
    full_env.update(env)
    if os.path.exists(log):
        os.unlink(log)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *extra],
                          env=full_env, capture_output=True, text=True, timeout=60, cwd=cwd)
    calls = []
    if os.path.exists(log):
        with open(log) as f:
            calls = [json.loads(line) for line in f]
    assert all(c["cwd"] == cwd for c in calls)
    return proc, [c["argv"] for c in calls]


def write_results(run_dir, last: float, best: float | None = None,
                  paper: float | None = None) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump({"best_top1": last if best is None else best, "best_epoch": 3,
                   "last_top1": last, "last_epoch": 30, "paper_top1": paper}, f)


# ---- table1.sh ----------------------------------------------------------------------

def test_table1_argv_skip_resume_and_failure(tmp_path, fake_python):
    out = str(tmp_path / "t1")
    finished = os.path.join(out, "cifar100_N4", "finessl", "seed1")
    write_results(finished, 0.8)
    interrupted = os.path.join(out, "cifar100_N4", "finessl", "seed2")
    os.makedirs(interrupted)
    open(os.path.join(interrupted, "checkpoint_last.pt"), "w").close()

    proc, calls = sweep("table1.sh", fake_python, OUT=out, SETTINGS="cifar10_N1 cifar100_N4",
                        METHODS="fixmatch finessl", SEEDS="1 2",
                        FAKE_FAIL="/cifar10_N1/fixmatch/", args=["prec", "amp"])

    assert proc.returncode == 1, proc.stderr
    run = lambda s, m, seed: os.path.join(out, s, m, f"seed{seed}")  # noqa: E731
    assert calls[0] == [MAIN, "--cfg", peft_config("cifar10_N1"), "vpt_deep", "True",
                        "algorithm", "fixmatch", "seed", "1", "output_dir",
                        run("cifar10_N1", "fixmatch", 1), "prec", "amp"]
    dirs = [c[c.index("output_dir") + 1] for c in calls]
    assert dirs == [run("cifar10_N1", "fixmatch", 1), run("cifar10_N1", "fixmatch", 2),
                    run("cifar10_N1", "finessl", 1), run("cifar10_N1", "finessl", 2),
                    run("cifar100_N4", "fixmatch", 1), run("cifar100_N4", "fixmatch", 2),
                    interrupted]  # the finished seed1 of cifar100_N4/finessl is skipped
    assert calls[-1][-2:] == ["resume", interrupted]
    assert all("resume" not in c for c in calls[:-1])
    # both failures reported, the runs after them still done
    assert "FAILED " + run("cifar10_N1", "fixmatch", 1) in proc.stderr
    assert "FAILED " + run("cifar10_N1", "fixmatch", 2) in proc.stderr
    assert os.path.isfile(os.path.join(run("cifar100_N4", "fixmatch", 2), "results.json"))
    assert "skip   " + finished in proc.stdout
    assert "5 ran, 1 skipped (already finished), 2 failed" in proc.stdout

    # second pass: only the failed runs are tried again, and now succeed
    proc, calls = sweep("table1.sh", fake_python, OUT=out, SETTINGS="cifar10_N1 cifar100_N4",
                        METHODS="fixmatch finessl", SEEDS="1 2")
    assert proc.returncode == 0, proc.stderr
    assert [c[c.index("output_dir") + 1] for c in calls] == [
        run("cifar10_N1", "fixmatch", 1), run("cifar10_N1", "fixmatch", 2)]
    assert "2 ran, 6 skipped (already finished), 0 failed" in proc.stdout


def test_table1_defaults_and_unknown_setting(tmp_path, fake_python):
    proc, calls = sweep("table1.sh", fake_python, OUT=str(tmp_path), SETTINGS="cifar10_N3")
    assert proc.returncode == 2 and calls == []
    assert "unknown setting 'cifar10_N3'" in proc.stderr

    proc, calls = sweep("table1.sh", fake_python, OUT=str(tmp_path), SEEDS="1",
                        SETTINGS="food101_N10")
    assert proc.returncode == 0, proc.stderr
    assert [c[c.index("algorithm") + 1] for c in calls] == [
        "pseudolabel", "fixmatch", "flexmatch", "freematch", "softmatch", "debiaspl", "finessl"]


# ---- table6.sh ----------------------------------------------------------------------

TABLE6 = {
    "fixmatch": ["algorithm", "fixmatch"],
    "fixmatch+bms": ["algorithm", "fixmatch", "bms", "True"],
    "fixmatch+dls": ["algorithm", "fixmatch", "dls", "True"],
    "finessl": ["algorithm", "finessl"],
    "fixed_alpha": ["algorithm", "finessl", "bms_fixed_alpha", "True"],
    "no_margin_labeled": ["algorithm", "finessl", "bms_labeled", "False"],
    "no_smoothing": ["algorithm", "finessl", "smoothing", "0.0"],
    "aux_not_detached": ["algorithm", "finessl", "aux_detach", "False"],
}


def test_table6_variants(tmp_path, fake_python):
    out = str(tmp_path / "t6")
    proc, calls = sweep("table6.sh", fake_python, OUT=out, SEEDS="1",
                        FAKE_FAIL="/no_smoothing/", args=["num_epochs", "2"])
    assert proc.returncode == 1
    assert len(calls) == len(TABLE6)
    for argv, (variant, overrides) in zip(calls, TABLE6.items()):
        run_dir = os.path.join(out, "cifar100_N4", variant, "seed1")
        assert argv == [MAIN, "--cfg", peft_config("cifar100_N4"), "vpt_deep", "True",
                        *overrides, "seed", "1", "output_dir", run_dir, "num_epochs", "2"]
    assert "FAILED " + os.path.join(out, "cifar100_N4", "no_smoothing", "seed1") in proc.stderr

    # the summary lists the variants in the table's order
    proc = summarize(out, "--no-paper")
    rows = [line.split(" | ")[0][2:] for line in proc.stdout.splitlines()[4:]]
    assert rows == [v for v in TABLE6 if v != "no_smoothing"]


def test_table6_unknown_variant(tmp_path, fake_python):
    proc, calls = sweep("table6.sh", fake_python, OUT=str(tmp_path), VARIANTS="finessl +bms")
    assert proc.returncode == 2 and calls == []
    assert "unknown variant '+bms'" in proc.stderr


def test_run_peft(tmp_path, fake_python):
    proc, calls = sweep("run_peft.sh", fake_python, OUT=str(tmp_path), SETTINGS="cifar10_N2",
                        SEEDS="3")
    assert proc.returncode == 0, proc.stderr
    assert calls == [[MAIN, "--cfg", peft_config("cifar10_N2"), "vpt_deep", "True",
                      "seed", "3", "output_dir",
                      os.path.join(str(tmp_path), "cifar10_N2", "vpt_deep", "seed3")]]


# ---- summarize.py -------------------------------------------------------------------

def summarize(*args: str):
    return subprocess.run([sys.executable, SUMMARIZE, *args], capture_output=True, text=True,
                          timeout=30)


@pytest.fixture
def results_root(tmp_path):
    root = tmp_path / "sweep"
    runs = {  # (setting, method): [(last, best) per seed]
        ("cifar100_N4", "fixmatch"): [(0.70, 0.71), (0.72, 0.73), (0.74, 0.75)],
        ("cifar100_N4", "finessl"): [(0.80, 0.80), (0.81, 0.83)],
        ("cifar10_N1", "finessl"): [(0.961, 0.97)],
        ("cifar10_N1", "pseudolabel"): [(0.90, 0.90), (0.91, 0.91), (0.95, 0.95)],
        ("mysetting", "mymethod"): [(0.50, 0.50), (0.50, 0.50), (0.50, 0.50)],
    }
    paper = {"cifar100_N4": 80.44, "cifar10_N1": 96.15}  # what those configs declare
    for (setting, method), seeds in runs.items():
        for seed, (last, best) in enumerate(seeds, 1):
            write_results(root / setting / method / f"seed{seed}", last, best,
                          paper.get(setting))
    return str(root)


def test_summarize_last(results_root):
    proc = summarize(results_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"Test top-1 (%) at the last epoch, mean ± std over seeds ({results_root})",
        "",
        "| method | cifar10_N1 | cifar100_N4 | mysetting |",
        "|---|---|---|---|",
        "| pseudolabel | 92.00 ± 2.65 | - | - |",
        "| fixmatch | - | 72.00 ± 2.00 | - |",
        "| finessl | 96.10 (n=1) | 80.50 ± 0.71 (n=2) | - |",
        "| mymethod | - | - | 50.00 ± 0.00 |",
        "| FineSSL (paper) | 96.15 | 80.44 | - |",
    ]


def test_summarize_best_without_paper(results_root):
    proc = summarize(results_root, "--metric", "best", "--no-paper")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Test top-1 (%) at the best epoch")
    assert lines[4:] == [
        "| pseudolabel | 92.00 ± 2.65 | - | - |",
        "| fixmatch | - | 73.00 ± 2.00 | - |",
        "| finessl | 97.00 (n=1) | 81.50 ± 2.12 (n=2) | - |",
        "| mymethod | - | - | 50.00 ± 0.00 |",
    ]


def test_summarize_paper_row_only_where_a_config_declares_a_figure(tmp_path):
    # a setting named like a paper one, whose runs declare no figure, gets none
    write_results(tmp_path / "cifar10_N1" / "finessl" / "seed1", 0.5)
    assert "FineSSL (paper)" not in summarize(str(tmp_path)).stdout
    assert summarize(str(tmp_path), "--paper").stdout.splitlines()[-1] == \
        "| FineSSL (paper) | - |"
    write_results(tmp_path / "vit_tiny" / "finessl" / "seed1", 0.6, paper=12.5)
    assert summarize(str(tmp_path)).stdout.splitlines()[2:] == [
        "| method | cifar10_N1 | vit_tiny |", "|---|---|---|",
        "| finessl | 50.00 (n=1) | 60.00 (n=1) |", "| FineSSL (paper) | - | 12.50 |"]


def test_sweeps_take_any_config_with_paths_from_the_callers_folder(tmp_path, fake_python):
    caller = tmp_path / "elsewhere"
    (caller / "mine").mkdir(parents=True)
    (caller / "mine" / "demo_a.yaml").write_text("algorithm: finessl\n")
    for script, env, method in [("table1.sh", {"METHODS": "fixmatch"}, "fixmatch"),
                                ("run_peft.sh", {}, "finessl"),
                                ("table6.sh", {"VARIANTS": "finessl"}, "finessl")]:
        out = "sweep-" + script[:-3]
        proc, calls = sweep(script, fake_python, cwd=str(caller), CONFIGS="mine/demo_a.yaml",
                            OUT=out, SEEDS="1", **env)
        assert proc.returncode == 0, proc.stderr
        assert len(calls) == 1, calls  # CONFIGS alone: no paper setting is swept
        argv = calls[0]
        assert argv[:3] == [MAIN, "--cfg", "mine/demo_a.yaml"] and "vpt_deep" not in argv
        assert argv[argv.index("algorithm") + 1] == method
        run_dir = os.path.join(out, "demo_a", method, "seed1")  # named by the config
        assert argv[argv.index("output_dir") + 1] == run_dir
        assert os.path.isfile(caller / run_dir / "results.json")  # relative to the caller
    proc, calls = sweep("table1.sh", fake_python, cwd=str(caller), CONFIGS="nope.yaml")
    assert proc.returncode == 2 and calls == [] and "config not found: nope.yaml" in proc.stderr


def test_summarize_no_results(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for root in (str(tmp_path), str(tmp_path / "missing")):
        proc = summarize(root)
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert proc.stderr == f"summarize.py: no results.json with last_top1 under {root}\n"
