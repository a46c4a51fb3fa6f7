"""Where and in which precision a run computes: the device (CPU, a GPU, the local
rank's GPU under torchrun) and the ``prec`` mode (docs/method.md §4)."""
from __future__ import annotations

import contextlib
import logging

import torch

from finessl.distributed import SINGLE, Dist
from finessl.errors import UserError

log = logging.getLogger(__name__)


def select_device(cfg, dist: Dist = SINGLE) -> torch.device:
    """``gpu`` None: cuda:0 if CUDA exists, else CPU; ``gpu K``: cuda:K or an error.
    Under torchrun each process takes the GPU of its local rank."""
    if cfg.gpu is None:
        if dist.enabled and torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        raise UserError(f"gpu {cfg.gpu}: CUDA is not available on this machine; "
                        f"drop 'gpu' to run on the CPU")
    if cfg.gpu >= torch.cuda.device_count():
        raise UserError(f"gpu {cfg.gpu}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", cfg.gpu)


class Precision:
    """How parameters are stored and the step is computed (docs/method.md §4).

    ``fp16``, the released setting: the CLIP tower is open_clip's fp16 model and every
    trained tensor an fp16 parameter (:func:`~finessl.models.build_model`), with no
    autocast and no gradient scaler, so SGD updates fp16 weights with unscaled fp16
    gradients. ``amp``: fp32 weights, fp16 autocast and a gradient scaler, the
    numerically sound mode. ``bf16``: fp32 weights, bf16 autocast. ``fp32``: neither.
    ``cpu_fallback``: without CUDA every mode runs as fp32, with a warning (half
    precision is slow on a CPU); False keeps the mode on any device.
    """

    def __init__(self, prec: str, device: torch.device, cpu_fallback: bool = True):
        if cpu_fallback and prec != "fp32" and device.type != "cuda":
            log.warning("prec %s needs CUDA; running in fp32 on %s", prec, device.type)
            prec = "fp32"
        if prec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("prec bf16: this GPU has no bfloat16 support; use prec amp")
        self.mode = prec
        self.device = device
        self.fp16_params = prec == "fp16"
        self.amp_dtype = {"amp": torch.float16, "bf16": torch.bfloat16}.get(prec)
        self.scaler = torch.amp.GradScaler(device.type) if prec == "amp" else None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)
