"""The offline demo as an experiment: every algorithm of the project on Fashion-MNIST
(configs/demo/fashion_mnist_N4.yaml), 3 seeds each, as a method-by-setting table of
test top-1 (mean +- std) and the run report of the whole sweep (docs/results.md).
Every run uses real ImageNet weights (EfficientNet-Lite0) and real data, both
installed offline (see docs/demo.md); the recipe is the demo's for every method, only
``algorithm`` (and ``bms`` / ``dls``, ``DATA.NUM_L``) change; the rows are every
registered algorithm, so a new algorithm file adds its row. ``--table select`` runs
supervised, FixMatch and FineSSL at three learning rates with 5 validation images per
class held out (``DATA.NUM_VAL 5``), for ``main.py select`` (docs/selection.md). ``--table lt`` runs the
long-tailed table instead (configs/demo/fashion_mnist_LT.yaml: labeled and unlabeled
sets of ratio 20, and a reversed unlabeled set), into out/fashion_mnist_lt.

    python benchmarks/fashion_mnist.py                       # 12 rows x seeds 1 2 3
    python benchmarks/fashion_mnist.py --jobs 2              # the same, two runs at a time
    python benchmarks/fashion_mnist.py --seeds 1 --methods finessl --settings fashion_mnist_N1
    python benchmarks/fashion_mnist.py --table lt --jobs 2   # the long-tailed table
    python benchmarks/fashion_mnist.py --out /tmp/quick --seeds 1 -- num_epochs 1 total_steps 2

Runs go to OUT/<setting>/<method>/seed<s> (default OUT: out/fashion_mnist_bench),
run by the project's sweep runner (``scripts/sweep.py``): finished ones (results.json)
are reused, interrupted ones (checkpoint_last.pt) resumed, a run being trained by
another sweep on the same OUT is passed by, and a failed run is reported while the
sweep goes on (exit status 1 at the end). Then ``main.py report OUT --out OUT/report``
writes the report, and the table is printed in markdown.

``--jobs N`` trains N runs at once, each on cores/N threads, with each run's console
output in OUT/<setting>/<method>/seed<s>.console.txt. On small CPU models this gets
more out of a machine than one run on every core: EfficientNet-Lite0 at 64 px takes
1.54 s a step on 2 threads and 2.38 s on one (``benchmarks/cnn_step.py``), so two runs
at once do 1.3x the work.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scripts.sweep import MAIN, Run, run_sweep  # noqa: E402

DEMO = os.path.join(REPO, "configs", "demo")
N4, N1, LT, LT_REV, VAL = ("fashion_mnist_N4", "fashion_mnist_N1", "fashion_mnist_LT",
                           "fashion_mnist_LT_rev", "fashion_mnist_N4_val")
# setting -> (config, overrides): the balanced demo, its 1-label variant, the
# long-tailed demo (ratio 20, unlabeled set consistent) and its reversed unlabeled set.
SETTINGS = {N4: ("fashion_mnist_N4.yaml", []), N1: ("fashion_mnist_N4.yaml", ["DATA.NUM_L", "1"]),
            LT: ("fashion_mnist_LT.yaml", []),
            LT_REV: ("fashion_mnist_LT.yaml", ["DATA.IMB_U", "-20"]),
            VAL: ("fashion_mnist_N4.yaml", ["DATA.NUM_VAL", "5"])}
# the "select" grid's learning rates: the demo's, a third of it, three times it
SELECT_LRS = ("0.0033", "0.01", "0.03")
_ALGO = lambda m: ["algorithm", m]  # noqa: E731
# FineSSL's components plugged into other methods, against the plain method (paired by
# seed): the paper's "plug-and-play" claim, on every method that has such a row.
PLUGGED = [("flexmatch+bms+dls", "flexmatch"), ("softmatch+bms+dls", "softmatch"),
           ("adamatch+bms+dls", "adamatch"), ("simmatch+bms+dls", "simmatch")]


def method_rows() -> list[tuple[str, str, list[str]]]:
    """The balanced table: every algorithm that trains (from the registry, in its
    order: a new algorithm file adds its row), BMS + DLS plugged into the methods of
    PLUGGED that exist, and the fewest labels (1 per class) for FineSSL and FixMatch."""
    from finessl.algorithms import ALGORITHMS
    trained = sorted((n for n, c in ALGORITHMS.items() if c.trains and not c.uses_teacher
                      and not c.long_tailed_only),
                     key=lambda n: ALGORITHMS.get(n).order)
    rows = [(N4, m, [*_ALGO(m), *SCALED.get(m, [])]) for m in trained]
    rows += [(N4, plugged, ["algorithm", plain, "bms", "True", "dls", "True",
                            *SCALED.get(plain, [])])
             for plugged, plain in PLUGGED if plain in ALGORITHMS]
    return rows + [(N1, "finessl", _ALGO("finessl")), (N1, "fixmatch", _ALGO("fixmatch"))]


# Settings made for much longer runs, scaled to the demo's 8 x 50 = 400 steps (set
# before any of these rows ran; docs/results.md lists them), keyed by algorithm or
# imbalanced method:
# - Dash's 2048 supervised warm-up steps (of USB's 2^20) would outlast the run
#   (refused), so one epoch, the least that gives rho_hat an epoch of labeled losses;
# - distribution alignment's EMA (momentum 0.999, set by the first batch) would still
#   weigh that batch's mean prediction 67 % at the last step, so 0.99 (a ~100-step
#   horizon, about ReMixMatch's 128-batch window);
# - DARP refines after 12 of 30 epochs by default (40 %), so after 3 of 8 here; at 12 it
#   would never act in 8 epochs (refused: finessl/config.py starts_within_the_run).
SCALED = {"dash": ["DASH.WARMUP", "50"], "remixmatch": ["REMIXMATCH.DA_EMA", "0.99"],
          "adamatch": ["ADAMATCH.EMA", "0.99"], "darp": ["DARP.WARMUP", "3"]}
# table -> its rows (setting, method, overrides). "methods": method_rows(). "lt": where
# the bias is real (docs/results.md): the long-tailed split with the imbalanced-SSL
# methods of issue 25's table (ABC, DARP, ACR), and FineSSL on a reversed unlabeled set.
TABLES = {
    "methods": method_rows,
    "lt": lambda: [(LT, m, _ALGO(m)) for m in ("supervised", "fixmatch", "finessl")] + [
        (LT_REV, "finessl", _ALGO("finessl"))] + [
        (LT, f"fixmatch+{imb}", ["algorithm", "fixmatch", "imb", imb, *SCALED.get(imb, [])])
        for imb in ("abc", "darp")] + [
        (LT, "acr", _ALGO("acr"))],
    # choosing without peeking (docs/selection.md): 5 validation images per class held
    # out, three methods at three learning rates, for main.py select
    "select": lambda: [(VAL, f"{m}+lr{lr}", ["algorithm", m, "lr", lr])
                       for m in ("supervised", "fixmatch", "finessl") for lr in SELECT_LRS],
}
# Reference points measured on this machine (docs/demo.md): frozen-feature probes.
REFERENCE = [("class-mean classifier of the 40 labeled features", 0.59),
             ("linear probe, 40 labels", 0.62), ("linear probe, 250 labels", 0.77),
             ("linear probe, 1000 labels", 0.79)]


def runs(rows: list[tuple[str, str, list[str]]], seeds: list[int], out: str,
         extra: list[str]) -> list[Run]:
    """Every row at every seed, seed by seed (a first seed of every row comes soonest)."""
    out_runs = []
    for seed in seeds:
        for setting, method, overrides in rows:
            folder = os.path.join(out, setting, method, f"seed{seed}")
            config, setting_overrides = SETTINGS[setting]
            out_runs.append(Run(folder, ("--cfg", os.path.join(DEMO, config),
                                         *setting_overrides, *overrides, "setting", setting,
                                         "seed", str(seed), "output_dir", folder, *extra)))
    return out_runs


def markdown(out: str, against: str | None = None, methods=None) -> list[str]:
    """The report's method-by-setting table in markdown, or its table of ``against``
    minus each method (or only ``methods``), paired by seed."""
    from finessl.report.runs import find_runs
    from finessl.report import sweep as tables
    runs = find_runs([out])
    header, rows = (tables.table(runs, "last") if against is None else
                    tables.paired(runs, "last", against, methods))
    return tables.markdown(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="methods", choices=sorted(TABLES),
                        help="which table: 'methods' (balanced, the default), 'lt' "
                             "(long-tailed) or 'select' (a validation split, 3 learning rates)")
    every = sorted({m for rows in TABLES.values() for _, m, _ in rows()})
    parser.add_argument("--methods", nargs="+", default=None, choices=every, metavar="METHOD",
                        help="only these rows: " + ", ".join(every))
    parser.add_argument("--settings", nargs="+", default=None, choices=sorted(SETTINGS),
                        help="only these settings")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--out", default=None,
                        help="sweep folder (default out/fashion_mnist_bench, or "
                             "out/fashion_mnist_<table> for another table)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once, each on cores/JOBS threads")
    parser.add_argument("overrides", nargs="*",
                        help="KEY VALUE pairs for every run (after '--' when they follow "
                             "--methods, --settings or --seeds)")
    args = parser.parse_args(argv)
    if args.out is None:
        name = "bench" if args.table == "methods" else args.table
        args.out = os.path.join(REPO, "out", f"fashion_mnist_{name}")
    chosen = [row for row in TABLES[args.table]() if (args.methods is None or row[1] in args.methods)
              and (args.settings is None or row[0] in args.settings)]
    if not chosen:
        parser.error(f"--methods / --settings select no row of table {args.table!r}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    outcome = run_sweep(runs(chosen, args.seeds, args.out, args.overrides), args.jobs)
    if outcome.signum:
        return outcome.code
    code = subprocess.run([sys.executable, MAIN, "report", args.out,
                           "--out", os.path.join(args.out, "report")]).returncode
    if code == 0:
        print(f"Fashion-MNIST, EfficientNet-Lite0 (ImageNet), seeds "
              f"{' '.join(map(str, args.seeds))}: test top-1 (%) of the last epoch\n")
        print("\n".join(markdown(args.out)))
        print("\nFineSSL minus each method, paired by seed, 95 % confidence interval:\n")
        print("\n".join(markdown(args.out, "finessl")))
        plugged = [(p, plain) for p, plain in PLUGGED if any(row[1] == p for row in chosen)]
        if plugged:
            print("\nBMS + DLS plugged in, minus the plain method, paired by seed:\n")
        for p, plain in plugged:
            print("\n".join(markdown(args.out, p, [plain])) + "\n")
        if args.table == "methods":
            print("\nreference points (frozen features): " + "; ".join(
                f"{name} {100 * acc:.0f}" for name, acc in REFERENCE))
    return outcome.code or (1 if code else 0)


if __name__ == "__main__":
    sys.exit(main())
