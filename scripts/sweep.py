#!/usr/bin/env python
"""The sweep runner: many runs of ``main.py``, each in its own folder, resumable.

    python scripts/sweep.py table1 --settings cifar100_N4 --methods fixmatch finessl --seeds 1 -- prec amp
    bash scripts/table1.sh     # the same runner, its choices from the environment

The paper's sweeps (``peft``: FineSSL with VPT-deep, Table 1's methods, Table 6's
ablations) and the long-tailed one (``imb``: configs/lt/, USB's imbalanced settings) run
each config (``--settings``: configs/peft/NAME.yaml with ``vpt_deep
True``; ``--configs``: any config files, run as they are) at each seed, into
OUT/<config name>/<method>/seed<s>; ``benchmarks/fashion_mnist.py`` runs its own list.

Every sweep runs the same way (:func:`run_sweep`): a run whose folder holds
results.json has finished and is skipped; one holding checkpoint_last.pt was
interrupted and is resumed (``resume DIR``); any other starts. A run is locked while it
trains (DIR.lock, beside its folder), so two sweeps on one OUT never train the same
run: the second passes it by and says so. A failed run is reported and the sweep goes
on (exit status 1 at the end). Each run's line says how many runs are through, and
about how long the rest takes at the mean time of the runs trained so far. ``--jobs N``
trains N runs at once, each on cores/N threads (``OMP_NUM_THREADS``, unless set) with
its console output in DIR.console.txt. Ctrl-C (or SIGTERM) stops the whole sweep: no run
starts after it, the runs in progress stop (and resume next time), exit status 130 (143).

Relative paths (configs, OUT, the config's DATA.DATAPATH) mean what they mean where the
sweep is started: it never changes directory.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from finessl.engine.checkpoint import LAST  # noqa: E402
from finessl.errors import UserError  # noqa: E402
from finessl.io import RESULTS  # noqa: E402

MAIN = os.path.join(REPO, "main.py")
PAPER_SETTINGS = ["cifar10_N1", "cifar10_N2", "cifar10_N4", "cifar100_N4", "cifar100_N25",
                  "cifar100_N100", "food101_N2", "food101_N4", "food101_N10"]
TABLE1 = ["pseudolabel", "fixmatch", "flexmatch", "freematch", "softmatch", "debiaspl", "finessl"]
TABLE6 = {  # Table 6's variant -> the KEY VALUE overrides that make it
    "fixmatch": ["algorithm", "fixmatch"],
    "fixmatch+bms": ["algorithm", "fixmatch", "bms", "True"],
    "fixmatch+dls": ["algorithm", "fixmatch", "dls", "True"],
    "finessl": ["algorithm", "finessl"],
    "fixed_alpha": ["algorithm", "finessl", "bms_fixed_alpha", "True"],
    "no_margin_labeled": ["algorithm", "finessl", "bms_labeled", "False"],
    "no_smoothing": ["algorithm", "finessl", "smoothing", "0.0"],
    "aux_not_detached": ["algorithm", "finessl", "aux_detach", "False"],
}
# The long-tailed table (configs/lt/: USB's CIFAR-10-LT / CIFAR-100-LT sizes and ratios,
# consistent or reversed unlabeled sets): row -> overrides; the configs declare USB's
# published figures (``reference_top1``) under the same row names.
LT_SETTINGS = ["cifar10_lt_r100", "cifar10_lt_r100_rev", "cifar10_lt_r150",
               "cifar100_lt_r10", "cifar100_lt_r10_rev", "cifar100_lt_r15"]


def imb_rows() -> dict[str, list[str]]:
    """The long-tailed table's rows: the labeled-only, FixMatch and FineSSL baselines,
    ACR, FixMatch with each imbalanced-SSL method of the registry (its order: a new
    method file adds its row) and DebiasPL (USB's "fixmatch+debiaspl")."""
    from finessl.algorithms.imb import IMB_METHODS
    rows = {m: ["algorithm", m] for m in ("supervised", "fixmatch", "finessl", "acr")}
    rows.update({f"fixmatch+{m}": ["algorithm", "fixmatch", "imb", m] for m in IMB_METHODS})
    rows["fixmatch+debiaspl"] = ["algorithm", "debiaspl"]
    return rows


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its folder and ``main.py``'s arguments (``output_dir`` too)."""
    folder: str
    args: tuple[str, ...]


@contextlib.contextmanager
def locked(path: str):
    """Whether this process holds the lock file ``path`` (held until the block ends;
    the system releases it if the process dies)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Outcome:
    """What a sweep did: the runs trained, finished before, held by another sweep,
    failed; the signal that stopped it, if one did."""
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    signum: int | None = None

    @property
    def code(self) -> int:
        return 128 + self.signum if self.signum else 1 if self.failed else 0


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def _raise_stop(signum, frame):
    raise _Stop(signum)


class _Sweep:
    """The runs in progress, so that a stop reaches them and no run starts after it."""

    def __init__(self, jobs: int, command: list[str], total: int):
        self.jobs, self.command, self.total = jobs, command, total
        self.guard = threading.Lock()
        self.live: set[subprocess.Popen] = set()
        self.stopping = False
        self.through = 0  # runs skipped, held, trained or failed so far
        self.trained: list[float] = []  # seconds of each run trained by this sweep

    def progress(self, seconds: float | None = None) -> str:
        """'k of N runs through' after one more run, and, from the mean time of the runs
        this sweep trained, about how long the rest takes at ``jobs`` at once (a
        resumed run counts as a whole one)."""
        with self.guard:
            self.through += 1
            if seconds is not None:
                self.trained.append(seconds)
            text = f"{self.through} of {self.total} runs through"
            rest = self.total - self.through
            if rest and self.trained:
                text += ", about " + _duration(
                    sum(self.trained) / len(self.trained) * rest / self.jobs) + " left"
        return text

    def say(self, text: str, error: bool = False) -> None:
        with self.guard:
            print(text, file=sys.stderr if error else sys.stdout, flush=True)

    def train(self, run: Run) -> str:
        """Skip, resume or start one run: 'skipped', 'held', 'ran', 'failed', 'stopped'."""
        if os.path.exists(os.path.join(run.folder, RESULTS)):
            self.say(f"skip   {run.folder} (finished; {self.progress()})")
            return "skipped"
        with locked(run.folder + ".lock") as mine:
            if not mine:
                self.say(f"held   {run.folder} (another sweep is training it; "
                         f"{self.progress()})")
                return "held"
            if os.path.exists(os.path.join(run.folder, RESULTS)):  # finished meanwhile
                self.say(f"skip   {run.folder} (finished; {self.progress()})")
                return "skipped"
            resume = os.path.exists(os.path.join(run.folder, LAST))
            args = [*run.args, *(["resume", run.folder] if resume else [])]
            env = dict(os.environ)
            if self.jobs > 1:
                env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.jobs)))
            start = time.time()
            # one console file per run under --jobs: N progress bars on one terminal are unreadable
            with (open(run.folder + ".console.txt", "a") if self.jobs > 1
                  else contextlib.nullcontext()) as console:
                with self.guard:
                    if self.stopping:
                        return "stopped"
                    print(f"{'resume' if resume else 'start '} {run.folder}", flush=True)
                    process = subprocess.Popen([*self.command, *args], stdout=console,
                                               stderr=subprocess.STDOUT if console else None,
                                               env=env)
                    self.live.add(process)
                code = process.wait()
                with self.guard:
                    self.live.discard(process)
        if self.stopping:
            self.say(f"stopped {run.folder} (resumes next time)", error=True)
            return "stopped"
        if code:
            self.say(f"FAILED {run.folder} (exit {code}; {self.progress()})", error=True)
            return "failed"
        seconds = time.time() - start
        self.say(f"done   {run.folder} ({seconds:.0f} s; {self.progress(seconds)})")
        return "ran"

    def stop(self, signum: int) -> None:
        """No run starts from now on; the runs in progress get ``signum`` (after a
        moment: Ctrl-C on a terminal has already reached them)."""
        with self.guard:
            self.stopping = True
            live = list(self.live)
        deadline = time.time() + 1.0
        for process in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.time()))
            if process.poll() is None:
                process.send_signal(signum)
        for process in live:
            process.wait()


def _duration(seconds: float) -> str:
    """'2 h 05 min' or '7 min'."""
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def run_sweep(runs: list[Run], jobs: int = 1, command: list[str] | None = None) -> Outcome:
    """Train every run not finished, ``jobs`` at a time, in the list's order; print a
    line per run and the sweep's summary. ``command``: what a run's arguments follow
    (``python main.py``)."""
    state = _Sweep(jobs, command or [sys.executable, MAIN], len(runs))
    outcome = Outcome()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stop) if main_thread else None
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [(run, pool.submit(state.train, run)) for run in runs]
        for run, future in futures:
            status = future.result()
            if status != "stopped":
                getattr(outcome, status).append(run.folder)
    except (KeyboardInterrupt, _Stop) as e:
        outcome.signum = e.signum if isinstance(e, _Stop) else signal.SIGINT
        pool.shutdown(wait=False, cancel_futures=True)
        state.stop(outcome.signum)
    finally:
        pool.shutdown(wait=True)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if outcome.signum:
        state.say(f"sweep stopped by {signal.Signals(outcome.signum).name}: the runs in "
                  f"progress resume next time", error=True)
        return outcome
    state.say(f"sweep done: {len(outcome.ran)} ran, {len(outcome.skipped)} skipped (already "
              f"finished), " + (f"{len(outcome.held)} held by another sweep, " if outcome.held
                                else "") + f"{len(outcome.failed)} failed")
    for folder in outcome.failed:
        state.say(f"failed: {folder}", error=True)
    return outcome


def configs(settings: list[str], files: list[str]) -> list[tuple[str, str, list[str]]]:
    """(column name, config file, its PEFT overrides) of each paper setting (run with the
    paper's VPT-deep; configs/peft/, or configs/lt/ for the long-tailed ones) and each
    config file (run as it is, named by its file name)."""
    out = []
    for name in settings:
        folder = "lt" if name in LT_SETTINGS else "peft"
        path = os.path.join(REPO, "configs", folder, f"{name}.yaml")
        if not os.path.isfile(path):
            raise UserError(f"unknown setting '{name}': no configs/peft/{name}.yaml or "
                            f"configs/lt/{name}.yaml (CONFIGS=FILE sweeps any config)")
        out.append((name, path, ["vpt_deep", "True"]))
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"config not found: {path} (CONFIGS paths are relative to "
                            f"{os.getcwd()})")
        name = os.path.basename(path)
        out.append((name.rsplit(".", 1)[0] if name.endswith((".yaml", ".yml")) else name,
                    path, []))
    return out


def plan(table: str, settings: list[str], files: list[str], methods: list[str] | None,
         seeds: list[int], out: str, overrides: list[str]) -> list[Run]:
    """The runs of one of the paper's sweeps, config by config, method by method, seed
    by seed. ``peft``'s row is ``vpt_deep`` for a paper setting, ``finessl`` for a
    config file (run with ``algorithm finessl``)."""
    rows_of = {"table6": TABLE6, "imb": imb_rows()}.get(table) if table in ("table6", "imb") else None
    if rows_of is not None:
        unknown = [m for m in methods or () if m not in rows_of]
        if unknown:
            raise UserError(f"unknown {'variant' if table == 'table6' else 'row'} "
                            f"'{unknown[0]}'; known: {' '.join(rows_of)}")
    elif table == "table1":
        from finessl.algorithms import ALGORITHMS
        unknown = [m for m in methods or () if m not in ALGORITHMS]
        if unknown:
            raise UserError(f"unknown algorithm '{unknown[0]}'; known: "
                            f"{' '.join(sorted(ALGORITHMS, key=lambda n: ALGORITHMS.get(n).order))}")
    runs = []
    for name, path, peft in configs(settings, files):
        if table == "peft":
            rows = [("vpt_deep", [])] if peft else [("finessl", ["algorithm", "finessl"])]
        elif table == "table1":
            rows = [(m, ["algorithm", m]) for m in methods or TABLE1]
        else:
            rows = [(v, rows_of[v]) for v in methods or rows_of]
        for method, chosen in rows:
            for seed in seeds:
                folder = os.path.join(out, name, method, f"seed{seed}")
                runs.append(Run(folder, ("--cfg", path, *peft, *chosen, "seed", str(seed),
                                         "output_dir", folder, *overrides)))
    return runs


def _words(name: str, default: str) -> list[str]:
    return os.environ.get(name, default).split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Each option's default is its environment "
                                            "variable (SETTINGS, CONFIGS, METHODS or "
                                            "VARIANTS, SEEDS, OUT, JOBS) where set.")
    parser.add_argument("table", choices=("peft", "table1", "table6", "imb"))
    parser.add_argument("--settings", nargs="*", help="paper settings: configs/peft/NAME.yaml "
                        "(imb: configs/lt/NAME.yaml) + vpt_deep True (default: all 9; "
                        "table6: cifar100_N4; imb: the 6 long-tailed ones; none when "
                        "--configs is given)")
    parser.add_argument("--configs", nargs="*", help="config files, run as they are")
    parser.add_argument("--methods", nargs="+", help="table1's methods (any algorithm), "
                        "table6's variants or imb's rows")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--out", help="the sweep's folder (default out/TABLE)")
    parser.add_argument("--jobs", type=int, help="runs trained at once, each on cores/JOBS threads")
    parser.add_argument("overrides", nargs="*", help="KEY VALUE pairs for every run (after "
                        "'--' when they follow an option that takes a list)")
    args = parser.parse_args(argv)
    files = args.configs if args.configs is not None else _words("CONFIGS", "")
    default = {"table6": "cifar100_N4", "imb": " ".join(LT_SETTINGS)}.get(
        args.table, " ".join(PAPER_SETTINGS))
    settings = (args.settings if args.settings is not None else
                _words("SETTINGS", "" if files else default))
    methods = args.methods or _words("VARIANTS" if args.table == "table6" else "METHODS",
                                     "") or None
    try:
        seeds = args.seeds or [int(s) for s in _words("SEEDS", "1 2 3")]
        jobs = args.jobs if args.jobs is not None else int(os.environ.get("JOBS", "1"))
    except ValueError as e:
        parser.error(f"SEEDS and JOBS take whole numbers ({e})")
    if jobs < 1:
        parser.error(f"--jobs must be at least 1, not {jobs}")
    out = args.out or os.environ.get("OUT") or os.path.join("out", "peft" if args.table ==
                                                             "peft" else args.table)
    try:
        runs = plan(args.table, settings, files, methods, seeds, out, args.overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_sweep(runs, jobs).code


if __name__ == "__main__":
    sys.exit(main())
