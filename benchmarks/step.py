"""Cost of one FineSSL training step: ours against the plain implementation of the
same math (``benchmarks/plain_step.py``), measured in one run, printed as ratios.

    python benchmarks/step.py                 # ViT-B/16 (random weights), 224 px, VPT-deep 50, B = 2 and 4
    python benchmarks/step.py --model ViT-B-32 --batch 2 --steps 2
    python benchmarks/step.py --algorithms all --batch 4       # each algorithm against FixMatch

``--algorithms`` (names, or ``all``: every registered algorithm that trains on unlabeled
images) times each algorithm's own step instead, with its extra heads and state, and
prints its cost relative to FixMatch's in the same run (docs/algorithms.md).

Each (implementation, batch) runs in its own process. Memory, three ways:
- peak MB: the highest total of tensor memory allocated during one step, above what
  was allocated before it (weights, inputs), from the allocator's own records
  (``torch.profiler`` memory events on CPU, ``max_memory_allocated`` on CUDA);
- saved MB: the activations autograd keeps for backward (each storage once);
- RSS MB: the process's peak resident memory during the timed steps, above its level
  before the warm-up step (includes allocator caches and thread buffers).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

if not __package__:  # run as a file (python benchmarks/step.py): the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self):
        self.peak, self._stop = _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def build(model_name: str, batch: int, num_classes: int, device, algorithm: str = "finessl"):
    import torch
    from finessl.algorithms import build_algorithm
    from finessl.config import get_cfg_defaults
    from finessl.models import build_model

    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained, cfg.vpt_deep = model_name, "none", True
    cfg.algorithm = algorithm
    torch.manual_seed(0)
    model = build_model(cfg, [f"c{i}" for i in range(num_classes)], device, half=False)
    size = model.backbone.image_size[0]
    images = lambda: torch.randn(batch, 3, size, size, device=device)  # noqa: E731
    data = {"x": images(), "y": torch.randint(num_classes, (batch,), device=device),
            "x_idx": torch.arange(batch, device=device), "x_s": images(),
            "u_w": images(), "u_s1": images(), "u_s2": images(), "u_m": images(),
            "u_idx": torch.arange(batch, device=device),
            "u_true": torch.randint(num_classes, (batch,), device=device)}
    # 1000 unlabeled images; a labeled set of 4 per class (SimMatch's bank, ACR's and
    # the imbalanced methods' class counts read it)
    algorithm = build_algorithm(cfg, model, num_classes, 1000, device,
                                labeled_counts=torch.full((num_classes,), 4))
    return cfg, model, algorithm, data


def worker(impl: str, model_name: str, batch: int, steps: int) -> dict:
    import torch
    from benchmarks.plain_step import plain_finessl_step

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = impl.split(":", 1)[1] if impl.startswith("algo:") else "finessl"
    cfg, model, algorithm, batch_data = build(model_name, batch, 100, device, name)
    params = [p for p in model.parameters() if p.requires_grad] + algorithm.parameters()
    optim = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=5e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            if impl == "plain":
                loss = plain_finessl_step(model, algorithm.selected, batch_data, cfg, 100)
            else:
                loss, _ = algorithm.train_step(batch_data)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        algorithm.after_step()
        return loss

    saved = {"bytes": 0}
    seen = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):  # activations only: each storage once, parameters not at all
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            saved["bytes"] += t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()  # warm-up, and the bytes autograd keeps for one step
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss = PeakRSS()
    with rss:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _profiled_peak(step)
    state = [t for t in _tensors(algorithm.state_dict())]
    return {"sec": seconds, "img_s": 4 * batch / seconds, "peak_mb": peak / 2**20,
            "saved_mb": saved["bytes"] / 2**20, "rss_mb": (rss.peak - rss_base) / 2**20,
            "device": device.type, "extra_params": sum(p.numel() for p in algorithm.parameters()),
            "state_mb": sum(t.numel() * t.element_size() for t in state) / 2**20}


def _tensors(state):
    """Every tensor of a (nested) state dict."""
    import torch
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from _tensors(value)


def _profiled_peak(step) -> int:
    """Peak of (allocated - freed) CPU tensor bytes during one step."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


rss_base = 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--algorithms", nargs="+", default=None, metavar="NAME",
                        help="time these algorithms' steps against FixMatch's ('all': every "
                             "one that learns from unlabeled images)")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        global rss_base
        import gc
        gc.collect()
        rss_base = _rss_bytes()
        print(json.dumps(worker(args.worker[0], args.model, int(args.worker[1]), args.steps)))
        return
    here = os.path.abspath(__file__)

    def measure(impl: str, batch: int) -> dict:
        out = subprocess.run([sys.executable, here, "--model", args.model, "--steps",
                              str(args.steps), "--worker", impl, str(batch)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{impl} failed: {out.stderr.strip().splitlines()[-1]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    if args.algorithms:
        return compare_algorithms(args, measure)
    print(f"FineSSL step, {args.model} random weights, VPT-deep 50, mu = 1, "
          f"{args.steps} timed steps after one warm-up")
    print("| B | impl | s/step | img/s | peak MB | saved MB | RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        rows = {}
        for impl in ("plain", "ours"):
            rows[impl] = r = measure(impl, batch)
            print(f"| {batch} | {impl} | {r['sec']:.3f} | {r['img_s']:.1f} | "
                  f"{r['peak_mb']:.0f} | {r['saved_mb']:.0f} | {r['rss_mb']:.0f} |")
        p, o = rows["plain"], rows["ours"]
        ratio = {k: o[k] / p[k] for k in ("sec", "img_s", "peak_mb", "saved_mb", "rss_mb")}
        print(f"| {batch} | ours / plain | {ratio['sec']:.2f}x | {ratio['img_s']:.2f}x | "
              f"{ratio['peak_mb']:.2f}x | {ratio['saved_mb']:.2f}x | {ratio['rss_mb']:.2f}x |")


def compare_algorithms(args, measure) -> None:
    """Each algorithm's step (its own views, heads and state) against FixMatch's, each
    in its own process, at the first ``--batch``."""
    from finessl.algorithms import ALGORITHMS
    names = args.algorithms
    if names == ["all"]:
        names = [n for n, c in ALGORITHMS.items() if c.trains and c.uses_unlabeled
                 and not c.uses_teacher]
    names = sorted(set(names) | {"fixmatch"}, key=lambda n: ALGORITHMS.get(n).order)
    batch = args.batch[0]
    print(f"One training step per algorithm, {args.model} random weights, VPT-deep 50, "
          f"B = {batch}, mu = 1, {args.steps} timed steps after one warm-up")
    print("| algorithm | s/step | vs FixMatch | peak MB | vs FixMatch | extra parameters | "
          "state MB |")
    print("|---|---|---|---|---|---|---|")
    base = measure("algo:fixmatch", batch)
    for name in names:
        r = base if name == "fixmatch" else measure(f"algo:{name}", batch)
        print(f"| {name} | {r['sec']:.3f} | {r['sec'] / base['sec']:.2f}x | "
              f"{r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f}x | "
              f"{r['extra_params']:,} | {r['state_mb']:.2f} |")


if __name__ == "__main__":
    main()
