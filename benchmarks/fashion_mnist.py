"""The offline demo as an experiment: supervised, FixMatch and FineSSL on Fashion-MNIST
with 4 labels per class (configs/demo/fashion_mnist_N4.yaml), 3 seeds each, printed as
a mean +- std table of test top-1. Every run uses real ImageNet weights
(EfficientNet-Lite0) and real data, both installed offline (see docs/demo.md).

    python benchmarks/fashion_mnist.py                      # 3 methods x seeds 1 2 3
    python benchmarks/fashion_mnist.py --seeds 1 --methods finessl

Runs go to out/fashion_mnist_bench/<method>/seed<s>; finished ones are reused.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "demo", "fashion_mnist_N4.yaml")
# Reference points measured on this machine (docs/demo.md): frozen-feature probes and baselines.
REFERENCE = [("class-mean classifier of the 40 labeled features", 0.59),
             ("linear probe, 40 labels", 0.62), ("linear probe, 250 labels", 0.77),
             ("linear probe, 1000 labels", 0.79)]


def run(method: str, seed: int, out: str, extra: list[str]) -> dict:
    folder = os.path.join(out, method, f"seed{seed}")
    results = os.path.join(folder, "results.json")
    if not os.path.exists(results):
        args = ["--cfg", CONFIG, "algorithm", method, "seed", str(seed), "output_dir", folder]
        if os.path.exists(os.path.join(folder, "checkpoint_last.pt")):
            args += ["resume", folder]
        start = time.time()
        subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args, *extra],
                       check=True, cwd=REPO)
        print(f"{method} seed {seed}: {time.time() - start:.0f} s", file=sys.stderr)
    with open(results) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["supervised", "fixmatch", "finessl"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--out", default=os.path.join(REPO, "out", "fashion_mnist_bench"))
    parser.add_argument("overrides", nargs="*", help="KEY VALUE pairs for every run")
    args = parser.parse_args()
    table = {m: [run(m, s, args.out, args.overrides)["last_top1"] for s in args.seeds]
             for m in args.methods}
    print(f"Fashion-MNIST, 4 labels per class, EfficientNet-Lite0 (ImageNet), seeds "
          f"{' '.join(map(str, args.seeds))}: test top-1 of the last epoch")
    print("| method | mean | std | runs |")
    print("|---|---|---|---|")
    for method, accs in table.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {method} | {100 * statistics.mean(accs):.2f} | {100 * std:.2f} | "
              f"{' '.join(f'{100 * a:.2f}' for a in accs)} |")
    for name, acc in REFERENCE:
        print(f"| {name} (reference) | {100 * acc:.2f} | | |")


if __name__ == "__main__":
    main()
