"""The Fashion-MNIST method sweep (``benchmarks/fashion_mnist.py``): which runs it
trains, reuses and resumes, ``--jobs``, and the lock that keeps two sweeps on one
folder from training the same run. ``main.py`` is replaced by a stand-in that records
its command line and writes ``results.json``: these tests are about the sweep's
bookkeeping, the training itself is tested through ``main.py`` elsewhere."""
import json
import os
import subprocess
import threading
import time

import pytest

from benchmarks import fashion_mnist as bench

ROWS = [("fashion_mnist_N4", "fixmatch", ["algorithm", "fixmatch"]),
        ("fashion_mnist_N1", "finessl", ["algorithm", "finessl", "DATA.NUM_L", "1"])]


class FakeMain:
    """subprocess.run for main.py: records each call, trains nothing, finishes the run
    (or fails it, for the folders in ``fail``)."""

    def __init__(self, fail=(), seconds=0.0):
        self.calls, self.fail, self.seconds = [], set(fail), seconds
        self.active, self.most, self.guard = 0, 0, threading.Lock()

    def __call__(self, command, cwd=None, env=None, stdout=None, stderr=None):
        args = command[2:]
        folder = args[args.index("output_dir") + 1]
        with self.guard:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(self.seconds)
        self.calls.append({"args": args, "folder": folder, "env": env, "stdout": stdout})
        code = 1 if os.path.basename(os.path.dirname(folder)) in self.fail else 0
        if not code:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "results.json"), "w") as f:
                json.dump({"last_top1": 0.5}, f)
        with self.guard:
            self.active -= 1
        return subprocess.CompletedProcess(command, code)


@pytest.fixture
def fake(monkeypatch):
    main = FakeMain()
    monkeypatch.setattr(bench.subprocess, "run", main)
    return main


def folder(out, setting, method, seed):
    return os.path.join(str(out), setting, method, f"seed{seed}")


def test_every_row_at_every_seed_with_its_own_overrides(tmp_path, fake):
    assert bench.sweep(ROWS, [1, 2], str(tmp_path), ["num_epochs", "1"]) == []
    assert [c["folder"] for c in fake.calls] == [
        folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1),
        folder(tmp_path, "fashion_mnist_N1", "finessl", 1),
        folder(tmp_path, "fashion_mnist_N4", "fixmatch", 2),
        folder(tmp_path, "fashion_mnist_N1", "finessl", 2)]
    args = fake.calls[1]["args"]
    assert args[:2] == ["--cfg", bench.CONFIG]
    assert args[2:12] == ["algorithm", "finessl", "DATA.NUM_L", "1", "setting",
                          "fashion_mnist_N1", "seed", "1", "output_dir", fake.calls[1]["folder"]]
    assert args[-2:] == ["num_epochs", "1"] and "resume" not in args
    assert fake.calls[0]["stdout"] is None  # one job: the run's own console


def test_finished_runs_are_reused_and_interrupted_ones_resumed(tmp_path, fake):
    done = folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1)
    cut = folder(tmp_path, "fashion_mnist_N1", "finessl", 1)
    for path, name in ((done, "results.json"), (cut, "checkpoint_last.pt")):
        os.makedirs(path)
        open(os.path.join(path, name), "w").close()
    assert bench.sweep(ROWS, [1], str(tmp_path), []) == []
    assert [c["folder"] for c in fake.calls] == [cut]
    assert fake.calls[0]["args"][-2:] == ["resume", cut]
    assert bench.sweep(ROWS, [1], str(tmp_path), []) == []  # all finished: nothing runs
    assert len(fake.calls) == 1


def test_a_failed_run_is_named_and_the_sweep_goes_on(tmp_path, monkeypatch):
    main = FakeMain(fail={"fixmatch"})
    monkeypatch.setattr(bench.subprocess, "run", main)
    assert bench.sweep(ROWS, [1, 2], str(tmp_path), []) == [
        "fashion_mnist_N4 fixmatch seed 1", "fashion_mnist_N4 fixmatch seed 2"]
    assert len(main.calls) == 4


def test_jobs_train_runs_at_once_on_a_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 8)
    main = FakeMain(seconds=0.3)
    monkeypatch.setattr(bench.subprocess, "run", main)
    assert bench.sweep(ROWS, [1, 2], str(tmp_path), [], jobs=2) == []
    assert main.most == 2
    assert sorted(c["folder"] for c in main.calls) == sorted(
        folder(tmp_path, s, m, seed) for seed in (1, 2) for s, m, _ in ROWS)
    assert {c["env"]["OMP_NUM_THREADS"] for c in main.calls} == {"4"}
    for call in main.calls:  # each run's console to its own file, beside its folder
        assert call["stdout"].name == call["folder"] + ".console.txt"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
    bench.sweep(ROWS, [3], str(tmp_path), [], jobs=2)
    assert {c["env"]["OMP_NUM_THREADS"] for c in main.calls[4:]} == {"3"}


def test_a_run_another_sweep_holds_is_skipped_not_failed(tmp_path, fake, capsys):
    held = folder(tmp_path, "fashion_mnist_N4", "fixmatch", 1)
    with bench.locked(held + ".lock") as mine:
        assert mine
        assert bench.sweep(ROWS, [1], str(tmp_path), []) == []
    assert [c["folder"] for c in fake.calls] == [folder(tmp_path, "fashion_mnist_N1", "finessl", 1)]
    assert "fashion_mnist_N4 fixmatch seed 1: skipped, another sweep is training it" in \
        capsys.readouterr().err
    bench.sweep(ROWS, [1], str(tmp_path), [])  # released: now it trains
    assert fake.calls[-1]["folder"] == held


def test_the_lock_holds_across_processes(tmp_path):
    """flock is per open file: a second process (a second sweep) cannot take it."""
    path = str(tmp_path / "run.lock")
    probe = ("import sys; from benchmarks import fashion_mnist as b\n"
             "with b.locked(sys.argv[1]) as mine: print(mine)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    other = lambda: subprocess.run([bench.sys.executable, "-c", probe, path], cwd=repo,  # noqa: E731
                                   capture_output=True, text=True, check=True).stdout.strip()
    with bench.locked(path) as mine:
        assert mine and other() == "False"
    assert other() == "True"


def test_jobs_below_one_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--jobs", "0"])
    assert exit_.value.code == 2
    assert "--jobs must be at least 1, not 0" in capsys.readouterr().err
