"""The check after every backward pass: is the step finite, and has a signal asked the
run to stop (then :meth:`StepGuard.stop` raises ``Preempted``)? One reduction on the
device and one host sync per step (one all-reduce more with several processes, so that
every rank stops at the same step).

A non-finite loss, gradient or BatchNorm running statistic raises :class:`Diverged`:
one line naming the epoch, the step and every loss term, exit code 3, before the
optimizer applies the step and before anything is saved, so the last checkpoint is
the last good state. Under ``prec amp`` the gradient scaler owns the gradients
(it skips the steps whose scaled gradients overflow, that is its job), so only the
loss and the statistics are checked there.
"""
from __future__ import annotations

import logging
import math

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import get_total_norm

from finessl.engine import signals
from finessl.engine.checkpoint import LAST
from finessl.errors import UserError
from finessl.logs import PROGRESS

progress = logging.getLogger(PROGRESS)

DIVERGED_EXIT = 3


class Diverged(UserError):
    """Training produced a non-finite value; ``main.py`` exits with 3."""
    exit_code = DIVERGED_EXIT


def _max_abs(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Largest magnitude over ``tensors`` (inf or nan when any entry is): a norm that
    cannot overflow, whatever the dtype."""
    return get_total_norm(tensors, math.inf).float().reshape(1)


class StepGuard:
    def __init__(self, model: torch.nn.Module, params: list[torch.Tensor], precision, dist,
                 device: torch.device):
        self.params, self.dist, self.device = params, dist, device
        self.check_grads = precision.scaler is None
        self.hint = "lower lr" + (", or use prec amp or fp32" if precision.mode in ("fp16", "bf16")
                                  else "")
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.stats = {f"{n}.{b}": getattr(m, b) for n, m in model.named_modules()
                      if isinstance(m, _BatchNorm) and m.track_running_stats
                      for b in ("running_mean", "running_var") if getattr(m, b) is not None}

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.params if p.grad is not None] if self.check_grads else []

    def check(self, loss: torch.Tensor) -> tuple[bool, bool]:
        """(this step is finite, a signal asked to stop), the same on every rank."""
        parts = [loss.detach().float().reshape(1)]
        for group in (self._grads(), list(self.stats.values())):
            if group:
                parts.append(_max_abs(group))
        bad = (~torch.isfinite(torch.cat(parts))).any()
        if not self.dist.enabled:
            return not bool(bad), signals.requested() is not None
        flags = torch.stack([bad.float(), torch.tensor(float(signals.requested() is not None),
                                                       device=bad.device)])
        bad, stop = (self.dist.sum(flags) > 0).tolist()
        return not bad, stop

    def stop_requested(self) -> bool:
        """Between steps (after an epoch): has any rank been asked to stop?"""
        flag = float(signals.requested() is not None)
        if not self.dist.enabled:
            return bool(flag)
        return bool(self.dist.sum(torch.tensor([flag], device=self.device)).item() > 0)

    def stop(self, at: str, run_dir: str) -> None:
        """A signal asked to stop and the checkpoint of this point (``at``) is written:
        raise :class:`signals.Preempted` on every rank, once rank 0's file is complete."""
        self.dist.barrier()
        signum = signals.requested()
        what = signals.name(signum) if signum else "a signal to another process"
        message = (f"stopped by {what} {at}: {LAST} holds this point; continue with "
                   f"'resume {run_dir}'")
        progress.warning("%s", message)  # log.txt; main.py prints it on the console
        raise signals.Preempted(signum or signals.SIGNALS[0], message)

    def what(self, loss: torch.Tensor) -> str:
        """Which value is not finite (the slow path, once, when a step failed)."""
        if not torch.isfinite(loss.detach()).all():
            return "the loss is not finite"
        for p in self.params:
            if self.check_grads and p.grad is not None and not torch.isfinite(p.grad).all():
                return f"the gradient of {self.names.get(id(p), 'a parameter')} is not finite"
        for name, stat in self.stats.items():
            if not torch.isfinite(stat).all():
                return f"the BatchNorm statistic {name} is not finite"
        return "another process's step is not finite"

    def diverged(self, loss, logs: dict, epoch: int, step: int, num_epochs: int,
                 total_steps: int, saved: str | None) -> Diverged:
        """The error of a non-finite step; ``saved``: where the checkpoint on disk is
        ('epoch E [step S]'), None when none was written."""
        saved = ("no checkpoint was written" if saved is None
                 else f"{LAST} ({saved}) is left as it was")
        terms = {k: v for k, v in logs.items() if k.startswith("loss/")} or logs
        terms = "  ".join(f"{k} {float(v):.4g}" for k, v in sorted(terms.items()))
        return Diverged(f"training diverged at epoch {epoch + 1}/{num_epochs} step {step + 1}/"
                        f"{total_steps}: {self.what(loss)} ({terms}); {saved}; {self.hint}")
