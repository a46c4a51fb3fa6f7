"""The offline demo as an experiment: every algorithm of the project on Fashion-MNIST
(configs/demo/fashion_mnist_N4.yaml), 3 seeds each, as a method-by-setting table of
test top-1 (mean +- std) and the run report of the whole sweep (docs/results.md).
Every run uses real ImageNet weights (EfficientNet-Lite0) and real data, both
installed offline (see docs/demo.md); the recipe is the demo's for every method, only
``algorithm`` (and ``bms`` / ``dls``, ``DATA.NUM_L``) change.

    python benchmarks/fashion_mnist.py                       # 12 rows x seeds 1 2 3
    python benchmarks/fashion_mnist.py --seeds 1 --methods finessl --settings fashion_mnist_N1
    python benchmarks/fashion_mnist.py --out /tmp/quick --seeds 1 -- num_epochs 1 total_steps 2

Runs go to OUT/<setting>/<method>/seed<s> (default OUT: out/fashion_mnist_bench):
finished ones (results.json) are reused, interrupted ones (checkpoint_last.pt) resumed,
so the sweep continues where it stopped. A failed run is reported and the sweep goes
on (exit status 1 at the end). Then ``main.py report OUT --out OUT/report`` writes
the report, and the table is printed in markdown.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CONFIG = os.path.join(REPO, "configs", "demo", "fashion_mnist_N4.yaml")
N4, N1 = "fashion_mnist_N4", "fashion_mnist_N1"
# (setting, method, overrides): the paper's comparison (Table 1's methods), FineSSL's
# two components on FlexMatch and SoftMatch (its "plug-and-play" claim), and the
# fewest labels (1 per class) for FineSSL and FixMatch.
TABLE = [(N4, m, ["algorithm", m]) for m in (
    "supervised", "pseudolabel", "fixmatch", "flexmatch", "freematch", "softmatch", "debiaspl",
    "finessl")] + [
    (N4, "flexmatch+bms+dls", ["algorithm", "flexmatch", "bms", "True", "dls", "True"]),
    (N4, "softmatch+bms+dls", ["algorithm", "softmatch", "bms", "True", "dls", "True"]),
    (N1, "finessl", ["algorithm", "finessl", "DATA.NUM_L", "1"]),
    (N1, "fixmatch", ["algorithm", "fixmatch", "DATA.NUM_L", "1"]),
]
# Reference points measured on this machine (docs/demo.md): frozen-feature probes.
REFERENCE = [("class-mean classifier of the 40 labeled features", 0.59),
             ("linear probe, 40 labels", 0.62), ("linear probe, 250 labels", 0.77),
             ("linear probe, 1000 labels", 0.79)]


def run(setting: str, method: str, overrides: list[str], seed: int, out: str,
        extra: list[str]) -> bool:
    """Train (or resume, or reuse) one run; whether it has finished."""
    folder = os.path.join(out, setting, method, f"seed{seed}")
    if os.path.exists(os.path.join(folder, "results.json")):
        return True
    args = ["--cfg", CONFIG, *overrides, "setting", setting, "seed", str(seed),
            "output_dir", folder]
    if os.path.exists(os.path.join(folder, "checkpoint_last.pt")):
        args += ["resume", folder]
    start = time.time()
    code = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args, *extra],
                          cwd=REPO).returncode
    print(f"{setting} {method} seed {seed}: {time.time() - start:.0f} s"
          + (f", failed (exit {code})" if code else ""), file=sys.stderr)
    return code == 0


def markdown(out: str) -> list[str]:
    """The report's method-by-setting table, in markdown."""
    from finessl.report.runs import find_runs
    from finessl.report.sweep import table
    header, rows = table(find_runs([out]), "last")
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=None,
                        choices=sorted({m for _, m, _ in TABLE}), metavar="METHOD",
                        help="only these rows: " + ", ".join(sorted({m for _, m, _ in TABLE})))
    parser.add_argument("--settings", nargs="+", default=None, choices=(N4, N1),
                        help="only these settings")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--out", default=os.path.join(REPO, "out", "fashion_mnist_bench"))
    parser.add_argument("overrides", nargs="*",
                        help="KEY VALUE pairs for every run (after '--' when they follow "
                             "--methods, --settings or --seeds)")
    args = parser.parse_args(argv)
    chosen = [row for row in TABLE if (args.methods is None or row[1] in args.methods)
              and (args.settings is None or row[0] in args.settings)]
    if not chosen:
        parser.error("--methods / --settings select no row of the table")
    failed = [f"{s} {m} seed {seed}" for seed in args.seeds for s, m, o in chosen
              if not run(s, m, o, seed, args.out, args.overrides)]
    code = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "report", args.out,
                           "--out", os.path.join(args.out, "report")], cwd=REPO).returncode
    if code == 0:
        print(f"Fashion-MNIST, EfficientNet-Lite0 (ImageNet), seeds "
              f"{' '.join(map(str, args.seeds))}: test top-1 (%) of the last epoch\n")
        print("\n".join(markdown(args.out)))
        print("\nreference points (frozen features): " + "; ".join(
            f"{name} {100 * acc:.0f}" for name, acc in REFERENCE))
    for name in failed:
        print(f"failed: {name}", file=sys.stderr)
    return 1 if failed or code else 0


if __name__ == "__main__":
    sys.exit(main())
