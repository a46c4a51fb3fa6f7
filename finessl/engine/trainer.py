"""The training loop: epochs of ``total_steps`` steps, evaluation after each epoch,
tensorboard + text logs, atomic checkpoints and exact resume, also from the middle of
an epoch (a preemption checkpoint). A non-finite step stops the run (``Diverged``);
SIGTERM / SIGUSR1 stop it after the step in progress (``Preempted``)."""
from __future__ import annotations

import functools
import logging
import os
import warnings

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from finessl.algorithms import ALGORITHMS, build_algorithm
from finessl.data import build_data, build_test_loader, build_train_loaders
from finessl.distributed import SINGLE, Dist
from finessl.engine import diagnostics, signals
from finessl.engine.batches import epoch_batches
from finessl.engine.checkpoint import (LAST, rng_state, seed_everything, set_rng_state, where,
                                       write_checkpoint)
from finessl.engine import preflight
from finessl.engine.device import Precision
from finessl.engine.guard import Diverged, StepGuard
from finessl.errors import UserError, brief
from finessl.io import remove_orphan_temps
from finessl.logs import PROGRESS
from finessl.engine.evaluate import evaluate
from finessl.engine.optim import build_optimizer
from finessl.engine.teacher import load_teacher
from finessl.models import build_model

log = logging.getLogger(__name__)
progress = logging.getLogger(PROGRESS)


class NullWriter:
    """Stands in for the SummaryWriter on ranks other than 0."""

    def add_scalar(self, *args, **kwargs):
        pass

    add_histogram = add_histogram_raw = add_image = add_scalar
    close = add_scalar


class Trainer:
    """Builds data, model, algorithm and optimiser from ``cfg`` and runs them.

    ``setup``: the device, precision and model config the start worked out
    (:func:`finessl.engine.preflight.check`); without it they are worked out here
    (``precision`` then replaces the one ``cfg.prec`` gives on this device: tests run
    the half-precision modes on a CPU with it)."""

    def __init__(self, cfg, run_dir: str | None, seed: int, write_split: bool = True,
                 dist: Dist = SINGLE, precision: Precision | None = None,
                 setup: preflight.Setup | None = None):
        self.cfg, self.run_dir, self.seed, self.dist = cfg, run_dir, seed, dist
        setup = setup or preflight.setup(cfg, dist, precision)
        self.device, self.precision = setup.device, setup.precision
        if run_dir and dist.is_main:  # what killed writes left; nothing else writes here now
            for name in remove_orphan_temps(run_dir):
                log.info("removed %s in %s, the temp file of an interrupted write", name, run_dir)
        seed_everything(seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        chosen = ALGORITHMS.get(cfg.algorithm)
        model_cfg = setup.model_cfg  # what the trained model is (SemiKD: the student)
        self.data = build_data(cfg, setup.input_size,
                               run_dir if write_split and dist.is_main else None)
        self.model = build_model(model_cfg, self.data.classnames, self.device,
                                 self.precision.fp16_params, self.data.mean, self.data.std,
                                 chosen.zero_shot_head)
        self.algorithm = build_algorithm(cfg, self.model, self.data.num_classes,
                                         len(self.data.unlabeled), self.device, dist)
        if chosen.uses_teacher:  # loaded when training needs it (finessl/engine/teacher.py)
            self.algorithm.set_teacher(functools.partial(load_teacher, cfg, self.data,
                                                         self.device, setup.teacher))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.algorithm.trains:
            self.optim, self.sched = build_optimizer(cfg, self.params)
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0
        self.saved: str | None = None  # where the checkpoint on disk is: 'epoch E [step S]'
        self.history: list[dict] = []
        self.confusion: list[list[int]] | None = None  # of the last evaluation (the report's)
        self._train_means = diagnostics.EpochMeans()  # each epoch's mean training logs
        self._test_loader = None
        self._log_parameter_counts()

    def _log_parameter_counts(self) -> None:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.params)
        heads = sum(p.numel() for m in (self.model.head, self.model.aux_head)
                    for p in m.parameters())
        log.info("parameters: total %d, trainable %d, trainable without heads %d",
                 total, trainable, trainable - heads)

    # ---- checkpoints -------------------------------------------------------------
    def save(self, epoch: int, step: int = 0) -> None:
        """``epoch`` epochs done and ``step`` steps of the next (0: an end-of-epoch
        checkpoint). Rank 0 writes; every rank holds the same state (tested), so one
        file serves all."""
        self.saved = where({"epoch": epoch, "step": step})
        if not self.dist.is_main:
            return
        state = {
            "epoch": epoch, "step": step, "global_step": self.global_step, "seed": self.seed,
            "model": self.model.trainable_state_dict(), "optimizer": self.optim.state_dict(),
            "scheduler": self.sched.state_dict(), "algorithm": self.algorithm.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "rng": rng_state(), "history": self.history, "config": self.cfg.dump(),
            "classnames": self.data.classnames,
        }
        write_checkpoint(state, self.run_dir, epoch, self.cfg.checkpoint_freq if not step else 0)

    def load_state(self, state: dict, run_dir: str, full: bool = True) -> None:
        """Restore a state :func:`read_checkpoint` returned (read once per resume)."""
        path = os.path.join(run_dir, LAST)
        try:
            self.model.load_trainable_state_dict(state["model"])
        except (KeyError, RuntimeError) as e:
            raise UserError(f"{path} does not fit this config ({brief(e)}); "
                            f"use the config the run was trained with") from None
        if not full:
            return
        self.optim.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.algorithm.load_state_dict(state["algorithm"])
        if self.precision.scaler is not None and state["scaler"] is not None:
            self.precision.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]
        self.start_step = state.get("step", 0)  # older checkpoints: end of an epoch
        self.history, self.saved = state["history"], where(state)
        log.info("resumed from %s at %s", path, self.saved)

    # ---- training ----------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        writer = SummaryWriter(os.path.join(self.run_dir, "tensorboard"),
                               purge_step=self.global_step) if self.dist.is_main else NullWriter()
        if not self.algorithm.trains:
            self.record_epoch(-1, self.evaluate(), writer)
            writer.close()
            return self.summary()
        loaders = build_train_loaders(self.data, cfg.DATA.BATCH_SIZE, cfg.DATA.MU_U,
                                      cfg.total_steps, cfg.num_workers, self.seed,
                                      self.device.type == "cuda", self.dist.rank,
                                      self.dist.world, cfg.DATA.REPLAY)
        if not self.algorithm.uses_unlabeled:
            loaders = loaders[:1]
        self.guard = StepGuard(self.model, self.params, self.precision, self.dist, self.device)
        try:
            with signals.deferred():
                for epoch in range(self.start_epoch, cfg.num_epochs):
                    start = self.start_step if epoch == self.start_epoch else 0
                    self.train_epoch(epoch, loaders, writer, start)
                    with warnings.catch_warnings():  # resumed after the epoch's last step:
                        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
                        self.sched.step()  # no optimizer step in this process yet, rightly
                    result = self.evaluate()
                    self.record_epoch(epoch, result, writer)
                    self.save(epoch + 1)
                    if epoch + 1 < cfg.num_epochs and self.guard.stop_requested():
                        self._stop(f"after epoch {epoch + 1}/{cfg.num_epochs}")
        except Diverged as e:
            progress.error("%s", e)  # log.txt; main.py prints it on the console
            raise
        finally:
            writer.close()
        return self.summary()

    def _stop(self, at: str) -> None:
        """A signal asked to stop; the checkpoint of this point is written."""
        self.dist.barrier()  # rank 0's file is complete before any rank exits
        signum = signals.requested()
        what = signals.name(signum) if signum else "a signal to another process"
        message = (f"stopped by {what} {at}: {LAST} holds this point; continue with "
                   f"'resume {self.run_dir}'")
        progress.warning("%s", message)  # log.txt; main.py prints it on the console
        raise signals.Preempted(signum or signals.SIGNALS[0], message)

    def optimizer_step(self, batches, epoch: int, step: int) -> tuple[dict, bool]:
        """One optimizer step; its logs, and whether a signal asked to stop after it."""
        batch = dict(zip(("x", "y"), batches[0]))
        if len(batches) > 1:
            batch.update(zip(("u_w", "u_s1", "u_s2", "u_idx", "u_true"), batches[1]))
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with self.precision.autocast():
            loss, logs = self.algorithm.train_step(batch)
        self.optim.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()
        self.dist.average_gradients(self.params)
        finite, stop = self.guard.check(loss)
        if not finite:  # before the update: nothing non-finite reaches a parameter
            raise self.guard.diverged(loss, logs, epoch, step, self.cfg.num_epochs,
                                      self.cfg.total_steps, self._saved_line())
        if scaler is not None:
            scaler.step(self.optim)
            scaler.update()
        else:
            self.optim.step()
        self.global_step += 1
        return logs, stop

    def _saved_line(self) -> str:
        if self.saved is None:
            return "no checkpoint was written"
        return f"{LAST} ({self.saved}) is left as it was"

    def train_epoch(self, epoch: int, loaders, writer: SummaryWriter, start: int = 0) -> None:
        """Epoch ``epoch`` from step ``start`` on (> 0: resumed from a mid-epoch
        checkpoint, which holds the algorithm's state of that step)."""
        cfg, model = self.cfg, self.model
        model.train()
        if start == 0:
            self.algorithm.on_epoch_start(epoch)
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        window: dict[str, torch.Tensor] = {}
        in_window = 0
        with epoch_batches(loaders, start) as stream, tqdm(
                stream, total=cfg.total_steps, initial=start, dynamic_ncols=True,
                desc=f"epoch {epoch + 1}/{cfg.num_epochs}", leave=False,
                disable=not self.dist.is_main) as bar:
            for step, batches in enumerate(bar, start):
                logs, stop = self.optimizer_step(batches, epoch, step)
                for k, v in logs.items():
                    window[k] = window.get(k, 0.0) + torch.as_tensor(
                        v, dtype=torch.float32, device=self.device).detach()
                in_window += 1
                if (step + 1) % cfg.print_freq == 0 or step + 1 == cfg.total_steps:
                    keys = sorted(window)  # one all-reduce: the mean over ranks and steps
                    sums = self.dist.sum(torch.stack([window[k] for k in keys])) / self.dist.world
                    means = dict(zip(keys, (sums / in_window).tolist()))
                    window.clear()
                    in_window = 0
                    self._log_window(epoch, step, step + 1 - start, means, writer, bar)
                if stop:
                    self.save(epoch, step + 1)
                    self._stop(f"at epoch {epoch + 1}/{cfg.num_epochs} step {step + 1}/"
                               f"{cfg.total_steps}")

    def _log_window(self, epoch, step, done, means, writer, bar) -> None:
        lr = self.optim.param_groups[0]["lr"]
        self._train_means.add(means, epoch, step, done)
        for k, v in means.items():
            writer.add_scalar(f"train/{k}", v, self.global_step)
        writer.add_scalar("train/lr", lr, self.global_step)
        bar.set_postfix(loss=f"{means['loss/total']:.4f}",
                        mask=f"{means.get('pseudo/mask_rate', 0):.2f}", lr=f"{lr:.2e}")
        elapsed = bar.format_dict["elapsed"]
        left = (self.cfg.num_epochs - epoch) * self.cfg.total_steps - step - 1
        eta = elapsed / done * left
        progress.info("epoch %d/%d step %d/%d  %s  lr %.3e  eta %s", epoch + 1,
                      self.cfg.num_epochs, step + 1, self.cfg.total_steps,
                      "  ".join(f"{k} {v:.4f}" for k, v in means.items()), lr,
                      bar.format_interval(eta))

    def record_epoch(self, epoch: int, result: dict, writer: SummaryWriter) -> None:
        """The epoch's history entry (test metrics, pseudo-label statistics, epoch mean
        training logs: finessl/engine/diagnostics.py), tensorboard scalars, histograms
        and the report's figures, and diagnostics.json."""
        memory = self.algorithm.pseudo_label_memory()
        if memory is not None:
            result.update(diagnostics.memory_record(memory, self.data.unlabeled_targets,
                                                    self.data.num_classes))
            chosen = memory[memory >= 0]
            if chosen.numel():  # one bin per class
                edges = np.arange(self.data.num_classes + 1) - 0.5
                writer.add_histogram("pseudo/class", chosen.cpu().numpy(), epoch + 1, bins=edges)
        stats = getattr(self.algorithm, "stats", None)
        if stats is not None:
            result["confidence"] = stats.record()
            result["pseudo_ood_kept"] = diagnostics.kept_ood_share(result["confidence"])
        self.confusion = result.pop("confusion", None)
        result["train"] = self._train_means.pop()
        for k, v in result.items():
            if isinstance(v, (int, float)):
                writer.add_scalar(f"epoch/{k}", v, epoch + 1)
        per_class = result["per_class_acc"]
        writer.add_histogram("epoch/per_class_acc", np.nan_to_num(np.array(per_class)), epoch + 1)
        result["epoch"] = epoch + 1
        self.history.append(result)
        if self.dist.is_main and self.run_dir:
            diagnostics.write(self.run_dir, self)
            diagnostics.to_tensorboard(writer, self, epoch + 1)
        best = max(self.history, key=lambda r: r["top1"])
        log.info("epoch %d/%d  test top-1 %.2f%%  (best %.2f%% at epoch %d)  balanced %.2f%%  "
                 "ECE %.4f  pseudo-label acc %.2f%% on %.1f%% of unlabeled", epoch + 1,
                 self.cfg.num_epochs, 100 * result["top1"], 100 * best["top1"], best["epoch"],
                 100 * result["balanced_acc"], result["ece"], 100 * result.get("pseudo_acc", 0),
                 100 * result.get("pseudo_rate", 0))

    def evaluate(self) -> dict:
        if self._test_loader is None:
            self._test_loader = build_test_loader(self.data, max(100, self.cfg.DATA.BATCH_SIZE),
                                                  self.cfg.num_workers, self.dist.rank,
                                                  self.dist.world)
        return evaluate(self.model, self._test_loader, self.device, self.precision,
                        self.data.num_classes, self.dist, len(self.data.test))

    def summary(self) -> dict:
        if not self.history:
            return {}
        best = max(self.history, key=lambda r: r["top1"])
        return {"best_top1": best["top1"], "best_epoch": best["epoch"],
                "last_top1": self.history[-1]["top1"], "last_epoch": self.history[-1]["epoch"]}
