"""benchmarks/gpu_check.py cannot rot: its --cpu-smoke runs every path of the GPU check
on tiny models (every row passes or says why it was skipped), and without CUDA the
GPU check says so in one line."""
from __future__ import annotations

import re
import subprocess

import pytest
import torch

from benchmarks import gpu_check, gpu_runs
from benchmarks.gpu_steps import build_step
from conftest import main_inprocess

PATHS = ["FineSSL VPT-deep, prec fp16 (released)", "FineSSL VPT-deep, prec amp",
         "FineSSL VPT-deep, prec bf16", "FineSSL VPT-deep, prec fp32",
         "FineSSL VPT-deep, compile True (prec fp16)", "LoRA (lora True, prec fp16)",
         "AdaptFormer (adaptformer True, prec fp16)", "SSF (ssf True, prec fp16)",
         "BitFit (bias_tuning True, prec fp16)", "CNN with BN tuning (prec amp)",
         "SemiKD, ViT-S/16 student (prec fp16)",
         "main.py: a 1-epoch run on a generated CIFAR-10", "predict with that run",
         "nccl under torchrun, 2 GPUs: ranks in step"]


def _table(block: str, columns: int) -> list[list[str]]:
    """The rows of the markdown tables with ``columns`` columns, header rows left out."""
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in block.splitlines() if line.startswith("|")]
    return [r for r in rows if len(r) == columns and r[0] not in ("path", "figure", "---")]


def _main_in_this_process(cmd, timeout, threads=None):
    """gpu_runs._child for the main.py row, with main.main in this process (the ~5 s of
    a fresh interpreter's imports are not what this test is about): the same arguments,
    the same one-line failure."""
    assert cmd[1].endswith("main.py"), cmd
    code, out, err = main_inprocess(cmd[2:], rasterise=False)
    if code:
        raise gpu_runs.failure(code, err)
    return subprocess.CompletedProcess(cmd, code, out, err)


@pytest.mark.long
@pytest.mark.slow  # ~20 s: a dozen tiny models trained, a whole main.py run
def test_cpu_smoke_runs_every_path_and_reports_every_figure(capsys, monkeypatch):
    monkeypatch.setattr(gpu_runs, "_child", _main_in_this_process)
    code = gpu_check.main(["--cpu-smoke"])
    block = capsys.readouterr().out
    assert code == 0, block
    assert block.startswith("### GPU check")
    paths = _table(block, 4)
    assert [name for name, _, _, _ in paths] == PATHS
    for name, result, detail, seconds in paths:
        assert result == "ok" or result.startswith("skipped: needs"), (name, result, detail)
        assert float(seconds) >= 0
    trained = [detail for _, result, detail, _ in paths[:11] if result == "ok"]
    assert len(trained) >= 10  # compile is skipped on a CPU, nothing else that trains
    for detail in trained:
        changed, total = map(int, re.search(r"(\d+)/(\d+) trained tensors", detail).groups())
        assert changed == total > 0, detail
        assert float(re.search(r"loss ([\d.]+)", detail).group(1)) > 0, detail
    assert "attention: " in paths[0][2]
    assert paths[12][2].startswith("4 images labelled")
    figures = dict(_table(block, 2))
    assert len(figures) == 9
    for name, value in figures.items():
        assert not value.startswith("FAILED"), (name, value)
    assert float(figures["steps/s, peak GPU memory: prec fp32"].split()[0]) > 0
    ratio = re.search(r"([\d.]+)x$", figures[next(k for k in figures if "ours vs plain" in k)])
    assert 0 < float(ratio.group(1)) < 1  # ours keeps less than the plain step (docs/speed.md)


def test_without_cuda_it_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: no CUDA device") and err.count("\n") == 1


@pytest.mark.slow  # builds and trains a tiny model: ~3 s
def test_a_failing_path_is_a_failed_row_and_the_next_row_still_runs():
    report = gpu_check.Report(budget_s=600)
    frozen = [*gpu_check.SMOKE.vit, "lr", "0", "momentum", "0", "weight_decay", "0"]
    report.path("frozen", lambda: gpu_check.trained(*build_step(gpu_runs.RELEASED, frozen)))

    def needs_cuda():
        raise gpu_check.Skip("needs CUDA")
    report.path("skipped", needs_cuda)
    report.path("fine", lambda: "done")
    (_, result, detail, _), skipped, fine = report.paths
    assert result == "FAILED"
    assert re.fullmatch(r"AssertionError: (\d+)/\1 trained tensors unchanged: .*prompts.*", detail)
    assert skipped[1:3] == ("skipped: needs CUDA", "") and fine[1:3] == ("ok", "done")
    assert report.failed
