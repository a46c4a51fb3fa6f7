"""The paper's sweeps (``scripts/sweep.py`` and its shell entry points table1.sh,
table6.sh, run_peft.sh) and the summary table (``scripts/summarize.py``), without
training anything: ``main.py`` is the stand-in of tests/scripts/test_sweep.py, which records
its command line and finishes (or fails) the run, so what is checked is exactly what a
sweep hands to ``main.py``. The sweeps run in-process; one test starts a shell script
end to end, through the interpreter the user names in ``PYTHON``."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from scripts import summarize
from scripts import sweep as runner
from test_sweep import fake  # noqa: F401  (the fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = ("SETTINGS", "CONFIGS", "METHODS", "VARIANTS", "SEEDS", "OUT", "JOBS")


def peft_config(name: str) -> str:
    return os.path.join(REPO, "configs", "peft", f"{name}.yaml")


def sweep(table: str, monkeypatch, *args: str, **env) -> int:
    """``scripts/sweep.py TABLE ARGS`` with the environment ``env`` (the shell scripts'
    interface) and nothing else of the caller's."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runner.main([table, "--", *args])


def write_results(run_dir, last: float, best: float | None = None,
                  paper: float | None = None) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump({"best_top1": last if best is None else best, "best_epoch": 3,
                   "last_top1": last, "last_epoch": 30, "paper_top1": paper,
                   "setting": os.path.basename(os.path.dirname(os.path.dirname(run_dir))),
                   "seed": int(re.sub(r"\D", "", os.path.basename(run_dir)) or 0),
                   "history": [{"epoch": 30, "top1": last}]}, f)


# ---- table1 -------------------------------------------------------------------------

def test_table1_argv_skip_resume_and_failure(tmp_path, fake, monkeypatch, capsys):
    out = str(tmp_path / "t1")
    finished = os.path.join(out, "cifar100_N4", "finessl", "seed1")
    write_results(finished, 0.8)
    interrupted = os.path.join(out, "cifar100_N4", "finessl", "seed2")
    os.makedirs(interrupted)
    open(os.path.join(interrupted, "checkpoint_last.pt"), "w").close()
    monkeypatch.setenv("FAKE_FAIL", "/cifar10_N1/fixmatch/")
    choice = dict(OUT=out, SETTINGS="cifar10_N1 cifar100_N4", METHODS="fixmatch finessl",
                  SEEDS="1 2")

    assert sweep("table1", monkeypatch, "prec", "amp", **choice) == 1
    run = lambda s, m, seed: os.path.join(out, s, m, f"seed{seed}")  # noqa: E731
    calls = [c["argv"] for c in fake.calls]
    assert calls[0] == ["--cfg", peft_config("cifar10_N1"), "vpt_deep", "True",
                        "algorithm", "fixmatch", "seed", "1", "output_dir",
                        run("cifar10_N1", "fixmatch", 1), "prec", "amp"]
    assert fake.folders() == [
        run("cifar10_N1", "fixmatch", 1), run("cifar10_N1", "fixmatch", 2),
        run("cifar10_N1", "finessl", 1), run("cifar10_N1", "finessl", 2),
        run("cifar100_N4", "fixmatch", 1), run("cifar100_N4", "fixmatch", 2),
        interrupted]  # the finished seed1 of cifar100_N4/finessl is skipped
    assert calls[-1][-4:] == ["prec", "amp", "resume", interrupted]
    assert all("resume" not in c for c in calls[:-1])
    # both failures reported, the runs after them still done
    out_, err = capsys.readouterr()
    assert "FAILED " + run("cifar10_N1", "fixmatch", 1) in err
    assert "FAILED " + run("cifar10_N1", "fixmatch", 2) in err
    assert os.path.isfile(os.path.join(run("cifar100_N4", "fixmatch", 2), "results.json"))
    assert "skip   " + finished in out_
    assert "5 ran, 1 skipped (already finished), 2 failed" in out_

    # second pass: only the failed runs are tried again, and now succeed
    monkeypatch.delenv("FAKE_FAIL")
    assert sweep("table1", monkeypatch, **choice) == 0
    assert fake.folders()[7:] == [run("cifar10_N1", "fixmatch", 1),
                                  run("cifar10_N1", "fixmatch", 2)]
    assert "2 ran, 6 skipped (already finished), 0 failed" in capsys.readouterr().out


def test_table1_defaults_and_unknown_setting(tmp_path, fake, monkeypatch, capsys):
    assert sweep("table1", monkeypatch, OUT=str(tmp_path), SETTINGS="cifar10_N3") == 2
    assert fake.calls == []
    assert capsys.readouterr().err.startswith("error: unknown setting 'cifar10_N3'")

    assert sweep("table1", monkeypatch, OUT=str(tmp_path), SEEDS="1",
                 SETTINGS="food101_N10") == 0
    assert [c["argv"][c["argv"].index("algorithm") + 1] for c in fake.calls] == [
        "pseudolabel", "fixmatch", "flexmatch", "freematch", "softmatch", "debiaspl", "finessl"]
    # with neither, the nine paper settings
    assert [run.folder.split(os.sep)[-3] for run in runner.plan(
        "table1", runner.PAPER_SETTINGS, [], ["finessl"], [1], "o", [])] == [
        "cifar10_N1", "cifar10_N2", "cifar10_N4", "cifar100_N4", "cifar100_N25",
        "cifar100_N100", "food101_N2", "food101_N4", "food101_N10"]


def test_table1_takes_any_algorithm_and_names_an_unknown_one(tmp_path, fake, monkeypatch,
                                                             capsys):
    assert sweep("table1", monkeypatch, OUT=str(tmp_path), SETTINGS="cifar10_N2",
                 METHODS="debiaspl nosuchmatch") == 2
    assert fake.calls == []
    err = capsys.readouterr().err
    assert "unknown algorithm 'nosuchmatch'; known: zeroshot supervised" in err


def test_imb_runs_the_long_tailed_configs_and_summarize_sets_usbs_figures_beside(
        tmp_path, fake, monkeypatch, capsys):
    out = str(tmp_path / "imb")
    assert sweep("imb", monkeypatch, OUT=out, SEEDS="1", METHODS="fixmatch finessl") == 0
    settings = [c["argv"][1] for c in fake.calls[::2]]
    assert settings == [os.path.join(REPO, "configs", "lt", f"{s}.yaml")
                        for s in runner.LT_SETTINGS]
    assert fake.calls[1]["argv"][2:6] == ["vpt_deep", "True", "algorithm", "finessl"]
    assert sweep("imb", monkeypatch, OUT=out, METHODS="abcd") == 2
    assert "unknown row 'abcd'; known: supervised" in capsys.readouterr().err
    # the configs: USB's sizes, ratios and unlabeled profiles, and its figures
    from finessl.config_load import load_config
    rev = load_config(os.path.join(REPO, "configs", "lt", "cifar10_lt_r100_rev.yaml"), [])
    c100 = load_config(os.path.join(REPO, "configs", "lt", "cifar100_lt_r15.yaml"), [])
    assert (rev.DATA.NUM_L, rev.DATA.NUM_U, rev.DATA.IMB_L, rev.DATA.IMB_U) == (
        1500, 3000, 100.0, -100.0)
    assert (c100.DATA.NUM_L, c100.DATA.NUM_U, c100.DATA.IMB_L, c100.DATA.IMB_U) == (
        150, 300, 15.0, 15.0)
    assert "fixmatch+abc 83.78" in rev.reference_top1 and "fixmatch 54.29" in c100.reference_top1
    # summarize: our runs beside the published figures their configs declare
    for seed, last in ((1, 0.70), (2, 0.72)):
        run_dir = str(tmp_path / "s" / "cifar10_lt_r100_rev" / "fixmatch" / f"seed{seed}")
        write_results(run_dir, last)
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:
            f.write('reference_top1: ["fixmatch 69.95", "fixmatch+abc 83.78"]\n')
    code, lines, _ = summary(capsys, str(tmp_path / "s"))
    assert code == 0 and lines[-4:] == [
        "| method | cifar10_lt_r100_rev (ours) | cifar10_lt_r100_rev (published) |",
        "|---|---|---|", "| fixmatch | 71.00 ± 1.41 (n=2) | 69.95 |", "| fixmatch+abc | – | 83.78 |"]


# ---- table6 -------------------------------------------------------------------------

# Table 6's rows, in order: the variant, the algorithm it runs, the key it switches.
TABLE6 = [("fixmatch", "fixmatch", {}), ("fixmatch+bms", "fixmatch", {"bms": "True"}),
          ("fixmatch+dls", "fixmatch", {"dls": "True"}), ("finessl", "finessl", {}),
          ("fixed_alpha", "finessl", {"bms_fixed_alpha": "True"}),
          ("no_margin_labeled", "finessl", {"bms_labeled": "False"}),
          ("no_smoothing", "finessl", {"smoothing": "0.0"}),
          ("aux_not_detached", "finessl", {"aux_detach": "False"})]


def test_table6_variants(tmp_path, fake, monkeypatch, capsys):
    out = str(tmp_path / "t6")
    monkeypatch.setenv("FAKE_FAIL", "/no_smoothing/")
    assert sweep("table6", monkeypatch, "num_epochs", "2", OUT=out, SEEDS="1") == 1
    assert len(fake.calls) == len(TABLE6)
    for call, (variant, algorithm, switch) in zip(fake.calls, TABLE6):
        run_dir = os.path.join(out, "cifar100_N4", variant, "seed1")
        overrides = ["algorithm", algorithm, *(x for kv in switch.items() for x in kv)]
        assert call["argv"] == ["--cfg", peft_config("cifar100_N4"), "vpt_deep", "True",
                                *overrides, "seed", "1", "output_dir", run_dir,
                                "num_epochs", "2"]
    assert "FAILED " + os.path.join(out, "cifar100_N4", "no_smoothing", "seed1") in \
        capsys.readouterr().err

    # the summary: each algorithm then its variants, then the ablations by name
    assert summarize.main([out, "--no-paper"]) == 0
    rows = [line.split(" | ")[0][2:] for line in capsys.readouterr().out.splitlines()[4:]]
    assert rows == ["fixmatch", "fixmatch+bms", "fixmatch+dls", "finessl", "aux_not_detached",
                    "fixed_alpha", "no_margin_labeled"]


def test_table6_unknown_variant(tmp_path, fake, monkeypatch, capsys):
    assert sweep("table6", monkeypatch, OUT=str(tmp_path), VARIANTS="finessl +bms") == 2
    assert fake.calls == []
    assert "unknown variant '+bms'" in capsys.readouterr().err


def test_run_peft(tmp_path, fake, monkeypatch):
    assert sweep("peft", monkeypatch, OUT=str(tmp_path), SETTINGS="cifar10_N2", SEEDS="3") == 0
    assert [c["argv"] for c in fake.calls] == [
        ["--cfg", peft_config("cifar10_N2"), "vpt_deep", "True", "seed", "3", "output_dir",
         os.path.join(str(tmp_path), "cifar10_N2", "vpt_deep", "seed3")]]


def test_sweeps_take_any_config_with_paths_from_the_callers_folder(tmp_path, fake,
                                                                   monkeypatch, capsys):
    caller = tmp_path / "elsewhere"
    (caller / "mine").mkdir(parents=True)
    (caller / "mine" / "demo_a.yaml").write_text("algorithm: finessl\n")
    monkeypatch.chdir(caller)
    for table, env, method in [("table1", {"METHODS": "fixmatch"}, "fixmatch"),
                               ("peft", {}, "finessl"),
                               ("table6", {"VARIANTS": "finessl"}, "finessl")]:
        out = "sweep-" + table
        seen = len(fake.calls)
        assert sweep(table, monkeypatch, CONFIGS="mine/demo_a.yaml", OUT=out, SEEDS="1",
                     **env) == 0
        assert len(fake.calls) == seen + 1  # CONFIGS alone: no paper setting is swept
        argv = fake.calls[-1]["argv"]
        assert argv[:2] == ["--cfg", "mine/demo_a.yaml"] and "vpt_deep" not in argv
        assert argv[argv.index("algorithm") + 1] == method
        run_dir = os.path.join(out, "demo_a", method, "seed1")  # named by the config
        assert argv[argv.index("output_dir") + 1] == run_dir
        assert os.path.isfile(caller / run_dir / "results.json")  # relative to the caller
    capsys.readouterr()
    assert sweep("table1", monkeypatch, CONFIGS="nope.yaml") == 2
    assert "config not found: nope.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_the_shell_scripts_run_the_sweep_with_the_users_python(tmp_path, fake):
    """End to end: ``bash scripts/X.sh`` -> ``$PYTHON scripts/sweep.py X`` -> ``$PYTHON
    main.py ...`` for every run, in the caller's folder, with the environment's choices
    and the extra arguments; the exit status is the sweep's."""
    caller = tmp_path / "elsewhere"
    (caller / "mine").mkdir(parents=True)
    (caller / "mine" / "demo_a.yaml").write_text("algorithm: finessl\n")
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    env.update(PYTHON=fake.path, FAKE_LOG=fake.log, FAKE_FAIL="/fixmatch/seed2",
               CONFIGS="mine/demo_a.yaml", METHODS="fixmatch", SEEDS="1 2", OUT="o")
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "table1.sh"), "prec", "amp"],
                          env=env, cwd=caller, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    run = lambda seed: os.path.join("o", "demo_a", "fixmatch", f"seed{seed}")  # noqa: E731
    assert [c["argv"] for c in fake.calls] == [
        [os.path.join(REPO, "main.py"), "--cfg", "mine/demo_a.yaml", "algorithm", "fixmatch",
         "seed", str(seed), "output_dir", run(seed), "prec", "amp"] for seed in (1, 2)]
    assert {c["cwd"] for c in fake.calls} == {str(caller)}
    assert os.path.isfile(caller / run(1) / "results.json")
    assert "FAILED " + run(2) in proc.stderr and "1 ran, 0 skipped" in proc.stdout
    for script, table in (("run_peft.sh", "peft"), ("table6.sh", "table6"), ("imb.sh", "imb")):
        with open(os.path.join(REPO, "scripts", script)) as f:
            assert f.read().splitlines()[-1] == \
                f'exec "${{PYTHON:-python}}" "$(dirname "$0")/sweep.py" {table} -- "$@"'


# ---- summarize.py -------------------------------------------------------------------

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
            write_results(str(root / setting / method / f"seed{seed}"), last, best,
                          paper.get(setting))
    return str(root)


def summary(capsys, *args: str) -> tuple[int, list[str], str]:
    code = summarize.main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_summarize_last(results_root, capsys):
    code, lines, err = summary(capsys, results_root)
    assert code == 0, err
    assert lines == [
        f"Test top-1 (%) at the last epoch, mean ± std over seeds ({results_root})",
        "",
        "| method | cifar10_N1 | cifar100_N4 | mysetting |",
        "|---|---|---|---|",
        "| pseudolabel | 92.00 ± 2.65 | – | – |",
        "| fixmatch | – | 72.00 ± 2.00 | – |",
        "| finessl | 96.10 (n=1) | 80.50 ± 0.71 (n=2) | – |",
        "| mymethod | – | – | 50.00 ± 0.00 |",
        "| FineSSL (paper) | 96.15 | 80.44 | – |",
    ]


def test_summarize_best_without_paper(results_root, capsys):
    code, lines, err = summary(capsys, results_root, "--metric", "best", "--no-paper")
    assert code == 0, err
    assert lines[0].startswith("Test top-1 (%) at the best epoch")
    assert lines[4:] == [
        "| pseudolabel | 92.00 ± 2.65 | – | – |",
        "| fixmatch | – | 73.00 ± 2.00 | – |",
        "| finessl | 97.00 (n=1) | 81.50 ± 2.12 (n=2) | – |",
        "| mymethod | – | – | 50.00 ± 0.00 |",
    ]


def test_summarize_paper_row_only_where_a_config_declares_a_figure(tmp_path, capsys):
    # a setting named like a paper one, whose runs declare no figure, gets none
    write_results(str(tmp_path / "cifar10_N1" / "finessl" / "seed1"), 0.5)
    assert not any("FineSSL (paper)" in line for line in summary(capsys, str(tmp_path))[1])
    assert summary(capsys, str(tmp_path), "--paper")[1][-1] == "| FineSSL (paper) | – |"
    write_results(str(tmp_path / "vit_tiny" / "finessl" / "seed1"), 0.6, paper=12.5)
    assert summary(capsys, str(tmp_path))[1][2:] == [
        "| method | cifar10_N1 | vit_tiny |", "|---|---|---|",
        "| finessl | 50.00 (n=1) | 60.00 (n=1) |", "| FineSSL (paper) | – | 12.50 |"]


def test_summarize_no_results(tmp_path, capsys):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for root in (str(tmp_path), str(tmp_path / "missing")):
        code, lines, err = summary(capsys, root)
        assert code == 2 and lines == []
        assert len(err.splitlines()) == 1 and err.startswith(f"error: {root}")
    # runs in progress only (diagnostics, no results.json): nothing finished to show
    progress = tmp_path / "a" / "b" / "seed1"
    progress.mkdir()
    (progress / "diagnostics.json").write_text(json.dumps(
        {"format": 1, "classnames": ["a"], "history": [{"epoch": 1, "top1": 0.5}]}))
    code, lines, err = summary(capsys, str(tmp_path))
    assert code == 2 and err == f"error: {tmp_path} holds no finished run: no results.json " \
                                "below it\n"


def test_summarize_against_pairs_by_seed_with_its_interval(results_root, capsys):
    code, lines, err = summary(capsys, results_root, "--against", "finessl", "--no-paper")
    assert code == 0, err
    # cifar100_N4, seeds 1 and 2: finessl - fixmatch = 10, 9 points: mean 9.5, sd 0.707,
    # se 0.5, t(1, 0.975) = 12.706: 9.5 -+ 6.35
    row = next(line for line in lines if line.startswith("| cifar100_N4 | fixmatch |"))
    assert row == "| cifar100_N4 | fixmatch | 2 | +9.50 | [+3.15, +15.85] | finessl ahead |"
    code, _, err = summary(capsys, results_root, "--against", "nosuch")
    assert code == 2 and err.startswith("error: --against nosuch:") and err.count("\n") == 1


def test_summarize_against_a_method_with_one_seed_prints_the_table_and_says_why(tmp_path,
                                                                                 capsys):
    """A sweep in progress: one seed each, no paired interval yet, the means all the same."""
    for method, top1 in (("finessl", 0.7), ("pimodel", 0.6)):
        write_results(str(tmp_path / "fm_N4" / method / "seed1"), top1)
    code, lines, err = summary(capsys, str(tmp_path), "--against", "finessl")
    assert code == 0 and err == ""
    assert "| finessl | 70.00 (n=1) |" in lines and "| pimodel | 60.00 (n=1) |" in lines
    assert lines[-1] == ("no method shares 2 finished seeds with finessl yet (a paired "
                         "interval needs 2)")
