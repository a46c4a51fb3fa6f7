"""Cost of one FineSSL training step: ours against the plain implementation of the
same math (``benchmarks/plain_step.py``), measured in one run, printed as ratios.

    python benchmarks/step.py                 # ViT-B/16 (random weights), 224 px, VPT-deep 50, B = 2 and 4
    python benchmarks/step.py --model ViT-B-32 --batch 2 --steps 2

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


def build(model_name: str, batch: int, num_classes: int, device):
    import torch
    from finessl.algorithms import build_algorithm
    from finessl.config import get_cfg_defaults
    from finessl.models import build_model

    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained, cfg.vpt_deep = model_name, "none", True
    torch.manual_seed(0)
    model = build_model(cfg, [f"c{i}" for i in range(num_classes)], device, half=False)
    size = model.backbone.image_size[0]
    images = lambda: torch.randn(batch, 3, size, size, device=device)  # noqa: E731
    data = {"x": images(), "y": torch.randint(num_classes, (batch,), device=device),
            "u_w": images(), "u_s1": images(), "u_s2": images(),
            "u_idx": torch.arange(batch, device=device),
            "u_true": torch.randint(num_classes, (batch,), device=device)}
    algorithm = build_algorithm(cfg, model, num_classes, 1000, device)
    return cfg, model, algorithm, data


def worker(impl: str, model_name: str, batch: int, steps: int) -> dict:
    import torch
    from benchmarks.plain_step import plain_finessl_step

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, model, algorithm, batch_data = build(model_name, batch, 100, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=5e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            if impl == "ours":
                loss, _ = algorithm.train_step(batch_data)
            else:
                loss = plain_finessl_step(model, algorithm.selected, batch_data, cfg, 100)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
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
    return {"sec": seconds, "img_s": 4 * batch / seconds, "peak_mb": peak / 2**20,
            "saved_mb": saved["bytes"] / 2**20, "rss_mb": (rss.peak - rss_base) / 2**20,
            "device": device.type}


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
    print(f"FineSSL step, {args.model} random weights, VPT-deep 50, mu = 1, "
          f"{args.steps} timed steps after one warm-up")
    print("| B | impl | s/step | img/s | peak MB | saved MB | RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        rows = {}
        for impl in ("plain", "ours"):
            out = subprocess.run([sys.executable, here, "--model", args.model, "--steps",
                                  str(args.steps), "--worker", impl, str(batch)],
                                 capture_output=True, text=True, check=True)
            rows[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            r = rows[impl]
            print(f"| {batch} | {impl} | {r['sec']:.3f} | {r['img_s']:.1f} | "
                  f"{r['peak_mb']:.0f} | {r['saved_mb']:.0f} | {r['rss_mb']:.0f} |")
        p, o = rows["plain"], rows["ours"]
        ratio = {k: o[k] / p[k] for k in ("sec", "img_s", "peak_mb", "saved_mb", "rss_mb")}
        print(f"| {batch} | ours / plain | {ratio['sec']:.2f}x | {ratio['img_s']:.2f}x | "
              f"{ratio['peak_mb']:.2f}x | {ratio['saved_mb']:.2f}x | {ratio['rss_mb']:.2f}x |")


if __name__ == "__main__":
    main()
