"""The sweep runner (``scripts/sweep.py: run_sweep``) and the Fashion-MNIST method sweep
built on it (``benchmarks/fashion_mnist.py``): which runs it trains, reuses and resumes,
failures, ``--jobs``, the lock that keeps two sweeps on one folder from training the
same run, and Ctrl-C / SIGTERM stopping the whole sweep. ``main.py`` is replaced by a
small stand-in program (:data:`FAKE`) that records its command line and writes
``results.json``: these tests are about the sweep's bookkeeping, the training itself is
tested through ``main.py`` elsewhere."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from benchmarks import fashion_mnist as bench
from scripts import sweep as runner

ROWS = [("fashion_mnist_N4", "fixmatch", ["algorithm", "fixmatch"]),
        ("fashion_mnist_N1", "finessl", ["algorithm", "finessl"])]

# Stand-in for 'python main.py ARGS' (standard library only, starts in milliseconds):
# logs one JSON line per call to $FAKE_LOG, sleeps $FAKE_SECONDS, then fails (exit 1)
# where the run folder contains $FAKE_FAIL, else writes the folder's results.json.
# Called as an interpreter (``PYTHON=fake``) it runs a script other than main.py
# itself, as its own sys.executable, so that script's main.py calls come back here.
FAKE = f"""#!{sys.executable}
import json, os, runpy, sys, time
args = sys.argv[1:]
if args and not args[0].startswith("-") and not args[0].endswith("main.py"):
    sys.executable, sys.argv = os.path.abspath(__file__), args
    sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
    runpy.run_path(args[0], run_name="__main__")
    sys.exit(0)
folder = args[args.index("output_dir") + 1]
record = {{"argv": args, "cwd": os.getcwd(), "folder": folder, "start": time.time(),
          "omp": os.environ.get("OMP_NUM_THREADS")}}
print("training", folder, flush=True)
if os.environ.get("FAKE_STARTED"):  # a file that says the stand-in is in its sleep
    open(os.environ["FAKE_STARTED"], "w").close()
try:
    time.sleep(float(os.environ.get("FAKE_SECONDS", "0")))
except KeyboardInterrupt:
    record["interrupted"] = True
record["end"] = time.time()
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(record) + "\\n")
if record.get("interrupted") or os.environ.get("FAKE_FAIL", "//") in folder:
    sys.exit(130 if record.get("interrupted") else 1)
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "results.json"), "w") as f:
    json.dump({{"best_top1": 0.5, "best_epoch": 1, "last_top1": 0.5, "last_epoch": 1,
               "history": [{{"epoch": 1, "top1": 0.5}}]}}, f)
"""


class Fake:
    """The stand-in's path and what it recorded."""

    def __init__(self, folder):
        self.path, self.log = str(folder / "fake_python"), str(folder / "calls.jsonl")
        with open(self.path, "w") as f:
            f.write(FAKE)
        os.chmod(self.path, 0o755)

    @property
    def calls(self) -> list[dict]:
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    def folders(self) -> list[str]:
        return [c["folder"] for c in self.calls]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """main.py replaced by the stand-in for every sweep of the test."""
    made = Fake(tmp_path)
    for name in ("FAKE_FAIL", "FAKE_SECONDS", "FAKE_STARTED", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAKE_LOG", made.log)
    monkeypatch.setattr(runner, "MAIN", made.path)
    return made


def folder(out, setting, method, seed):
    return os.path.join(str(out), setting, method, f"seed{seed}")


def sweep(out, seeds=(1,), extra=(), jobs=1):
    return runner.run_sweep(bench.runs(ROWS, list(seeds), str(out), list(extra)), jobs)


def test_every_row_at_every_seed_with_its_own_overrides(tmp_path, fake):
    assert sweep(tmp_path, [1, 2], ["num_epochs", "1"]).code == 0
    assert fake.folders() == [
        folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1),
        folder(tmp_path, "fashion_mnist_N1", "finessl", 1),
        folder(tmp_path, "fashion_mnist_N4", "fixmatch", 2),
        folder(tmp_path, "fashion_mnist_N1", "finessl", 2)]
    # each setting's config and overrides, then the row's, then the sweep's
    demo = lambda name: os.path.join(bench.DEMO, name)  # noqa: E731
    assert fake.calls[1]["argv"] == [
        "--cfg", demo("fashion_mnist_N4.yaml"), "DATA.NUM_L", "1", "algorithm", "finessl",
        "setting", "fashion_mnist_N1", "seed", "1", "output_dir", fake.calls[1]["folder"],
        "num_epochs", "1"]
    # the balanced table's rows come from the registry, in its order
    rows = bench.method_rows()
    names = [m for _, m, _ in rows]
    assert names[0] == "supervised"
    assert names.index("pseudolabel") < names.index("fixmatch") < names.index("finessl")
    assert ("fashion_mnist_N4", "flexmatch+bms+dls",
            ["algorithm", "flexmatch", "bms", "True", "dls", "True"]) in rows
    assert not any(m in ("zeroshot", "semikd") for _, m, _ in rows)
    reversed_lt = next(run for run in bench.runs(bench.TABLES["lt"](), [1], str(tmp_path), [])
                       if "fashion_mnist_LT_rev" in run.folder)
    assert reversed_lt.args[:6] == (
        "--cfg", demo("fashion_mnist_LT.yaml"), "DATA.IMB_U", "-20", "algorithm", "finessl")
    assert fake.calls[0]["cwd"] == os.getcwd()  # the runner never changes directory
    # one job: the run's own console, no console file
    assert not any(name.endswith(".console.txt") for _, _, files in os.walk(tmp_path)
                   for name in files)


def test_finished_runs_are_reused_and_interrupted_ones_resumed(tmp_path, fake, capsys):
    done = folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1)
    cut = folder(tmp_path, "fashion_mnist_N1", "finessl", 1)
    for path, name in ((done, "results.json"), (cut, "checkpoint_last.pt")):
        os.makedirs(path)
        open(os.path.join(path, name), "w").close()
    outcome = sweep(tmp_path)
    assert (outcome.ran, outcome.skipped, outcome.code) == ([cut], [done], 0)
    assert fake.folders() == [cut]
    assert fake.calls[0]["argv"][-2:] == ["resume", cut]
    out = capsys.readouterr().out
    assert f"skip   {done} (finished; 1 of 2 runs through)" in out and f"resume {cut}" in out
    assert "sweep done: 1 ran, 1 skipped (already finished), 0 failed" in out
    assert sweep(tmp_path).skipped == [done, cut]  # all finished: nothing runs
    assert len(fake.calls) == 1


def test_a_failed_run_is_named_and_the_sweep_goes_on(tmp_path, fake, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "/fixmatch/")
    outcome = sweep(tmp_path, [1, 2])
    failed = [folder(tmp_path, "fashion_mnist_N4", "fixmatch", s) for s in (1, 2)]
    assert outcome.failed == failed and outcome.code == 1
    assert len(fake.calls) == 4 and len(outcome.ran) == 2
    err = capsys.readouterr().err
    assert f"FAILED {failed[0]} (exit 1; 1 of 4 runs through)" in err
    assert f"failed: {failed[1]}" in err


class Clock:
    """``time`` for the runner: every reading is ``step`` seconds after the last."""

    def __init__(self, step: float):
        self.now, self.step = 1e9, step

    def time(self) -> float:
        self.now += self.step
        return self.now


def test_each_line_says_how_far_the_sweep_is_and_about_how_long_is_left(tmp_path, fake,
                                                                        monkeypatch, capsys):
    done = folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1)
    os.makedirs(done)
    open(os.path.join(done, "results.json"), "w").close()
    monkeypatch.setattr(runner, "time", Clock(step=1500))  # each run: 1500 s, start to end
    assert sweep(tmp_path, [1, 2]).code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "runs through" in line]
    # the skipped run is not timed; the rest: the mean run time x the runs left
    assert [line.split(" (", 1)[1] for line in lines] == [
        "finished; 1 of 4 runs through)",
        "1500 s; 2 of 4 runs through, about 50 min left)",
        "1500 s; 3 of 4 runs through, about 25 min left)",
        "1500 s; 4 of 4 runs through)"]
    assert runner._duration(59) == "1 min" and runner._duration(3930) == "1 h 06 min"


def test_jobs_train_runs_at_once_on_a_share_of_the_cores(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 8)
    monkeypatch.setenv("FAKE_SECONDS", "0.5")
    assert sweep(tmp_path, [1, 2], jobs=2).code == 0
    calls = fake.calls
    assert sorted(c["folder"] for c in calls) == sorted(
        folder(tmp_path, s, m, seed) for seed in (1, 2) for s, m, _ in ROWS)
    most = max(sum(c["start"] <= t < c["end"] for c in calls) for t in
               (c["start"] for c in calls))
    assert most == 2
    assert {c["omp"] for c in calls} == {"4"}
    for call in calls:  # each run's console to its own file, beside its folder
        with open(call["folder"] + ".console.txt") as f:
            assert f.read() == f"training {call['folder']}\n"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
    sweep(tmp_path, [3], jobs=2)
    assert {c["omp"] for c in fake.calls[4:]} == {"3"}


def test_a_run_another_sweep_holds_is_passed_by_not_failed(tmp_path, fake, capsys):
    held = folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1)
    with runner.locked(held + ".lock") as mine:
        assert mine
        outcome = sweep(tmp_path)
        assert (outcome.held, outcome.failed, outcome.code) == ([held], [], 0)
    assert fake.folders() == [folder(tmp_path, "fashion_mnist_N1", "finessl", 1)]
    out = capsys.readouterr().out
    assert f"held   {held} (another sweep is training it; 1 of 2 runs through)" in out
    assert "1 ran, 0 skipped (already finished), 1 held by another sweep, 0 failed" in out
    sweep(tmp_path)  # released: now it trains
    assert fake.folders()[-1] == held


@pytest.mark.slow  # a second process holds the lock
def test_the_lock_holds_across_processes(tmp_path):
    """flock is per open file: a second process (a second sweep) cannot take the lock
    ``locked`` holds (the probe takes it as ``locked`` does, without importing torch)."""
    path = str(tmp_path / "run.lock")
    probe = ("import fcntl, sys\n"
             "try: fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError: print(False)\n"
             "else: print(True)")
    other = lambda: subprocess.run([sys.executable, "-c", probe, path],  # noqa: E731
                                   capture_output=True, text=True, check=True).stdout.strip()
    with runner.locked(path) as mine:
        assert mine and other() == "False"
    assert other() == "True"


@pytest.mark.slow  # a sweep in a process of its own, signalled
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_whole_sweep(tmp_path, fake, monkeypatch, capsys, signum):
    """The run in progress gets the signal too (a kill of the sweep's process alone),
    no run starts after it, and the exit status is 128 + its number."""
    monkeypatch.setenv("FAKE_SECONDS", "30")
    started = str(tmp_path / "started")
    monkeypatch.setenv("FAKE_STARTED", started)
    done = threading.Event()

    def signal_the_sweep():  # once the first run is training, however loaded the machine
        while not done.is_set():
            if os.path.exists(started):
                time.sleep(0.2)  # into the stand-in's sleep
                return os.kill(os.getpid(), signum)
            time.sleep(0.05)
    # Ctrl-C as in a terminal: Python's own SIGINT handler. A suite started in the
    # background by a script (`pytest &`: the shell ignores SIGINT for it, and Python
    # then installs no handler) would otherwise never see this signal.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = threading.Thread(target=signal_the_sweep, daemon=True)
    thread.start()
    try:
        outcome = sweep(tmp_path, [1, 2])
    finally:
        done.set()
        signal.signal(signal.SIGINT, inherited)
    assert outcome.code == 128 + signum and outcome.ran == outcome.failed == [], \
        (outcome, inherited, threading.current_thread() is threading.main_thread())
    calls = fake.calls
    first = folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1)
    assert [c["folder"] for c in calls] == ([first] if signum == signal.SIGINT else [])
    if calls:  # SIGTERM ends the stand-in without its log line
        assert calls[0]["interrupted"] and calls[0]["end"] - calls[0]["start"] < 10
    assert f"stopped {first} (resumes next time)" in capsys.readouterr().err
    assert not os.path.exists(folder(tmp_path, "fashion_mnist_N1", "finessl", 1) + ".lock")


def test_jobs_below_one_is_refused_in_one_line(capsys):
    for main, argv in ((bench.main, ["--jobs", "0"]), (runner.main, ["table1", "--jobs", "0"])):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "--jobs must be at least 1, not 0" in capsys.readouterr().err
