"""Every CUDA path of FineSSL run for real on one GPU, and the figures docs/speed.md asks
for, printed as one markdown block ready to paste there.

    python benchmarks/gpu_check.py              # one GPU; rows left after --budget (450 s) fail
    python benchmarks/gpu_check.py --cpu-smoke  # the same paths, tiny models, < 1 min on a CPU

Paths (a row each, ok / FAILED / skipped, every row run whatever the others gave):
FineSSL with VPT-deep 50 on a random ViT-B/16 at 224 px, B = 32, mu = 1 (the released
cifar100_N4 setting) in each ``prec``, with the attention kernel PyTorch picked;
``compile True``; LoRA, AdaptFormer, SSF, BitFit; a CNN with BN tuning; SemiKD with a
ViT-S/16 student and a teacher built in memory; a whole ``main.py`` run on a generated
CIFAR-10, then ``predict`` with it; nccl under torchrun when there are two GPUs. Each
path trains a few real steps (benchmarks/gpu_steps.py: the Trainer's own step) and
checks the loss is finite and every trained tensor changed.

Figures: steps/s and peak GPU memory per precision, the divergence guard's cost per
step, the loader's images/s (``benchmarks/data.py``), the projected time of a
cifar100_N4 run beside the paper's, and the peak memory of our step against the plain
one of ``benchmarks/plain_step.py`` (``benchmarks/step.py``'s worker).

Without CUDA (and without ``--cpu-smoke``) it says so in one line and exits 2; it exits
1 when a row FAILED. ``--cpu-smoke`` builds its tiny models where a run would (on a
machine with CUDA, its GPU) and skips compile and torchrun.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass

if not __package__:  # run as a file (python benchmarks/gpu_check.py): the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import gpu_runs  # noqa: E402
from benchmarks.gpu_steps import (NoGuard, attention_kernels, build_step, release,  # noqa: E402
                                  timed, train)

RUN_STEPS = 30 * 500  # cifar100_N4: num_epochs x total_steps
PAPER_SECONDS = 9630  # Table 5: FineSSL's training time on cifar100_N4, one RTX 3090
PRECISIONS = (("fp16", "released"), ("amp", ""), ("bf16", ""), ("fp32", ""))
PEFT = (("LoRA", "lora"), ("AdaptFormer", "adaptformer"), ("SSF", "ssf"),
        ("BitFit", "bias_tuning"))


@dataclass(frozen=True)
class Scale:
    """What the check builds: KEY VALUE pairs on the released configs, and sizes."""
    vit: tuple  # FineSSL's model on configs/peft/cifar100_N4.yaml
    cnn: tuple  # the CNN with BN tuning (prec amp: fp16 halves a CNN tower whole)
    student: tuple  # SemiKD's student on configs/peft/cifar100_N4_kd.yaml
    timed_steps: int
    workers: int  # loader figure
    view: int
    loader_images: int
    plain: tuple  # (model, batch) of benchmarks/step.py's worker
    cuda: bool
    threads: int | None = None  # CPU threads of this process and of main.py (None: torch's)


GPU = Scale(vit=("vpt_deep", "True", "pretrained", "none"),
            cnn=("backbone", "efficientnet_lite0", "pretrained", "none", "bn_tuning", "True",
                 "prec", "amp"),
            student=("stu_backbone", "timm:vit_small_patch16_224", "stu_pretrained", "none",
                     "teacher", "in-memory"),  # a run folder in a run: here built in memory
            timed_steps=10, workers=8, view=224, loader_images=512, plain=("ViT-B-16", 32),
            cuda=True)
SMOKE = Scale(vit=GPU.vit + ("backbone", "ViT-Tiny-4", "vpt_len", "4", "DATA.BATCH_SIZE", "4"),
              cnn=GPU.cnn + ("backbone", "timm:test_efficientnet", "input_size", "32"),
              student=GPU.student + ("stu_backbone", "timm:test_vit", "stu_vpt_len", "4",
                                     "input_size", "32"),
              timed_steps=2, workers=2, view=32, loader_images=32, plain=("ViT-Tiny-4", 2),
              cuda=False, threads=1)  # tiny tensors: more threads only wait on each other
CHECK_STEPS = 3  # LoRA's and AdaptFormer's zero-initialised halves move from step 2 on


class Skip(Exception):
    """A row this machine cannot run; the message says why."""


class Report:
    """Rows of paths and figures, each computed under a catch: a failure is reported
    in its row and the next row runs."""

    def __init__(self, budget_s: float):
        self.paths: list[tuple[str, str, str, float]] = []  # name, result, detail, seconds
        self.figures: list[tuple[str, str]] = []
        self.deadline = time.monotonic() + budget_s

    def _run(self, compute) -> tuple[str, str, float]:
        if time.monotonic() > self.deadline:
            return "FAILED", "not run: the time budget was spent", 0.0
        start = time.monotonic()
        try:
            result, detail = "ok", compute()
        except Skip as e:
            result, detail = f"skipped: {e}", ""
        except Exception as e:  # noqa: BLE001  every failure is a row, not the end
            text = str(e).strip().splitlines()
            result, detail = "FAILED", f"{type(e).__name__}: {text[0] if text else ''}"[:200]
        release()
        return result, detail, time.monotonic() - start

    def path(self, name: str, compute) -> None:
        self.paths.append((name, *self._run(compute)))

    def figure(self, name: str, compute) -> None:
        result, value, _ = self._run(compute)
        self.figures.append((name, value if result == "ok" else result + (
            f" ({value})" if value else "")))

    @property
    def failed(self) -> bool:
        return any(r == "FAILED" for _, r, _, _ in self.paths) or \
            any(v.startswith("FAILED") for _, v in self.figures)


def trained(trainer, batches) -> str:
    """A few real steps; raises unless the loss is finite and every trained tensor moved."""
    out = train(trainer, batches, CHECK_STEPS)
    changed = out["tensors"] - len(out["unchanged"])
    if out["unchanged"]:
        raise AssertionError(f"{len(out['unchanged'])}/{out['tensors']} trained tensors "
                             f"unchanged: {', '.join(out['unchanged'][:3])}")
    ran_as = trainer.precision.mode
    asked = trainer.cfg.prec
    return (f"{CHECK_STEPS} steps, loss {out['loss']:.4f}, {changed}/{out['tensors']} trained "
            f"tensors changed" + (f"; ran as {ran_as} (no CUDA)" if ran_as != asked else ""))


def check_paths(report: Report, scale: Scale, speeds: dict) -> None:
    """Every path a row; the precision rows also fill ``speeds`` (steps/s, peak MB)."""
    released, kd = gpu_runs.RELEASED, gpu_runs.RELEASED_KD
    vit, no_vpt = list(scale.vit), [*scale.vit, "vpt_deep", "False"]
    for prec, note in PRECISIONS:
        def precision_row(prec=prec):
            trainer, batches = build_step(released, [*vit, "prec", prec])
            detail = trained(trainer, batches)
            kernel = attention_kernels(trainer, batches)
            speeds[prec] = timed(trainer, batches, scale.timed_steps)
            if prec == "fp16":
                speeds["guard"] = guard_cost(trainer, batches, scale.timed_steps)
            return f"{detail}; attention: {kernel}"
        report.path(f"FineSSL VPT-deep, prec {prec}" + (f" ({note})" if note else ""),
                    precision_row)

    def compiled():
        if not scale.cuda:  # tests/algorithms/test_step_equivalence.py compiles on CPU
            raise Skip("needs CUDA (torch.compile takes a minute on a CPU)")
        trainer, batches = build_step(released, [*vit, "compile", "True"])
        detail = trained(trainer, batches)
        speeds["compile"] = timed(trainer, batches, scale.timed_steps)
        return detail
    report.path("FineSSL VPT-deep, compile True (prec fp16)", compiled)
    for label, key in PEFT:
        report.path(f"{label} ({key} True, prec fp16)",
                    lambda key=key: trained(*build_step(released, [*no_vpt, key, "True"])))
    report.path("CNN with BN tuning (prec amp)",
                lambda: trained(*build_step(released, [*no_vpt, *scale.cnn])))
    report.path("SemiKD, ViT-S/16 student (prec fp16)",
                lambda: trained(*build_step(kd, [*vit, *scale.student])))
    with tempfile.TemporaryDirectory(prefix="finessl-gpu-check-") as tmp:
        run = {"tmp": tmp}
        report.path("main.py: a 1-epoch run on a generated CIFAR-10",
                    lambda: gpu_runs.main_run(vit, scale.workers, scale.threads, run))
        report.path("predict with that run", lambda: gpu_runs.predict_images(run))
        report.path("nccl under torchrun, 2 GPUs: ranks in step",
                    lambda: nccl(scale, os.path.join(tmp, "ranks.json")))


def guard_cost(trainer, batches, steps: int) -> dict:
    """Step time with the divergence guard and without, alternating, twice each."""
    guard, seconds = trainer.guard, {"on": 0.0, "off": 0.0}
    for _ in range(2):
        for name, g in (("on", guard), ("off", NoGuard())):
            trainer.guard = g
            seconds[name] += 0.5 / timed(trainer, batches, steps)["steps_s"]
    trainer.guard = guard
    return seconds


def nccl(scale: Scale, out: str) -> str:
    if not scale.cuda:
        raise Skip("needs CUDA")
    gpus = torch.cuda.device_count()
    if gpus < 2:
        raise Skip(f"needs 2 GPUs, {gpus} here")
    return gpu_runs.torchrun_check(os.path.abspath(__file__), [], out, CHECK_STEPS)


def measured(speeds: dict, key: str) -> dict:
    """What a path row measured; a figure whose path did not run is skipped (the path's
    own row says why)."""
    if key not in speeds:
        raise Skip("its path did not run")
    return speeds[key]


def figures(report: Report, scale: Scale, speeds: dict) -> None:
    for prec, _ in (*PRECISIONS, ("compile", "")):
        def speed(prec=prec):
            s = measured(speeds, prec)
            memory = f", peak {s['peak_mb']:,.0f} MB allocated" if s["peak_mb"] else ""
            return f"{s['steps_s']:.2f} steps/s{memory}"
        report.figure("steps/s, peak GPU memory: " + (f"prec {prec}" if prec != "compile"
                                                      else "compile True, prec fp16"), speed)

    def guard():
        on, off = measured(speeds, "guard")["on"], measured(speeds, "guard")["off"]
        return (f"{(on - off) * 1e3:+.1f} ms per step ({(on - off) / off:+.1%}): "
                f"{on * 1e3:.1f} vs {off * 1e3:.1f} ms")
    report.figure("divergence guard's cost (on vs off, prec fp16)", guard)
    loader = {}
    report.figure(f"loader: unlabeled images/s, {scale.workers} workers, {scale.view} px views",
                  lambda: gpu_runs.loader_speed(scale.workers, scale.view, scale.loader_images,
                                                loader))

    def projected():
        compute = RUN_STEPS / measured(speeds, "fp16")["steps_s"]
        data = RUN_STEPS * 32 / measured(loader, "img_s")  # 32 unlabeled images a step (mu = 1)
        return f"{max(compute, data):,.0f} s (steps {compute:,.0f} s, loader {data:,.0f} s) " \
               f"vs the paper's {PAPER_SECONDS:,} s on one RTX 3090 (Table 5)"
    report.figure("projected cifar100_N4 run, 30 x 500 steps, prec fp16", projected)
    report.figure(f"peak step memory, ours vs plain (B = {scale.plain[1]}, bf16 autocast on CUDA)",
                  lambda: gpu_runs.plain_memory(*scale.plain))


def header(scale: Scale) -> list[str]:
    if scale.cuda:
        props = torch.cuda.get_device_properties(0)
        machine = (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), "
                   f"{torch.cuda.device_count()} GPU(s), torch {torch.__version__}, "
                   f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
        model = "ViT-B/16 (random weights), 224 px, VPT-deep 50, B = 32, mu = 1"
    else:
        machine = (f"smoke run (--cpu-smoke), {os.cpu_count()} CPU cores, torch {torch.__version__}"
                   + (" (on cuda:0: CUDA is here)" if torch.cuda.is_available() else ""))
        model = "ViT-Tiny-4 (random weights), 32 px, VPT-deep 4, B = 4, mu = 1"
    return ["### GPU check (`python benchmarks/gpu_check.py`)", "", machine, "",
            f"configs/peft/cifar100_N4.yaml, `vpt_deep True pretrained none`: {model}; "
            f"{CHECK_STEPS} real steps a path, loss finite and every trained tensor changed.", ""]


def render(report: Report, scale: Scale) -> str:
    lines = header(scale) + ["| path | result | detail | s |", "|---|---|---|---|"]
    lines += [f"| {name} | {result} | {detail} | {seconds:.0f} |"
              for name, result, detail, seconds in report.paths]
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in report.figures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny models on the CPU, skipping what needs CUDA")
    parser.add_argument("--budget", type=float, default=450,
                        help="seconds after which the rows left are not run (and fail)")
    parser.add_argument("--rank-check", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    scale = SMOKE if args.cpu_smoke else GPU
    if args.rank_check:  # one torchrun process of the nccl row
        return gpu_runs.rank_check(list(scale.vit), args.rank_check, CHECK_STEPS)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA device here (torch.cuda.is_available() is False); "
              "--cpu-smoke runs the same paths on tiny models on the CPU", file=sys.stderr)
        return 2
    report, speeds, threads = Report(args.budget), {}, torch.get_num_threads()
    torch.set_num_threads(scale.threads or threads)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the paths print is not the block
            check_paths(report, scale, speeds)
            figures(report, scale, speeds)
    finally:
        torch.set_num_threads(threads)
    print(render(report, scale))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
