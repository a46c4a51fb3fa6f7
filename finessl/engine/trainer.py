"""The training loop: epochs of ``total_steps`` steps, evaluation after each epoch,
tensorboard + text logs, atomic checkpoints and exact resume."""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from finessl.algorithms import ALGORITHMS, build_algorithm
from finessl.data import build_data, build_test_loader, build_train_loaders
from finessl.distributed import SINGLE, Dist
from finessl.engine.checkpoint import (LAST, MODEL_KEYS, RESUME_KEYS, read_checkpoint,
                                       rng_state, seed_everything, set_rng_state,
                                       write_checkpoint)
from finessl.engine.device import Precision, select_device
from finessl.errors import UserError
from finessl.logs import PROGRESS
from finessl.engine.evaluate import evaluate
from finessl.engine.optim import build_optimizer
from finessl.metrics import distribution_entropy, top1
from finessl.models import build_model
from finessl.models.model import input_size

log = logging.getLogger(__name__)
progress = logging.getLogger(PROGRESS)


class NullWriter:
    """Stands in for the SummaryWriter on ranks other than 0."""

    def add_scalar(self, *args, **kwargs):
        pass

    add_histogram = add_scalar
    close = add_scalar


class Trainer:
    """Builds data, model, algorithm and optimiser from ``cfg`` and runs them.

    ``precision`` replaces the one ``cfg.prec`` gives on this device (tests run the
    half-precision modes on a CPU with it)."""

    def __init__(self, cfg, run_dir: str | None, seed: int, write_split: bool = True,
                 dist: Dist = SINGLE, precision: Precision | None = None):
        self.cfg, self.run_dir, self.seed, self.dist = cfg, run_dir, seed, dist
        if cfg.DATA.BATCH_SIZE % dist.world:
            raise UserError(f"DATA.BATCH_SIZE {cfg.DATA.BATCH_SIZE} (the global batch) is not "
                            f"divisible by the {dist.world} processes")
        self.device = select_device(cfg, dist)
        self.precision = precision or Precision(cfg.prec, self.device)
        seed_everything(seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.data = build_data(cfg, input_size(cfg),
                               run_dir if write_split and dist.is_main else None)
        self.model = build_model(cfg, self.data.classnames, self.device,
                                 self.precision.fp16_params, self.data.mean, self.data.std,
                                 ALGORITHMS.get(cfg.algorithm).zero_shot_head)
        self.algorithm = build_algorithm(cfg, self.model, self.data.num_classes,
                                         len(self.data.unlabeled), self.device, dist)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.algorithm.trains:
            self.optim, self.sched = build_optimizer(cfg, self.params)
        self.start_epoch, self.global_step = 0, 0
        self.history: list[dict] = []
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
    def save(self, epoch: int) -> None:
        """Rank 0 writes; every rank holds the same state (tested), so one file serves all."""
        if not self.dist.is_main:
            return
        state = {
            "epoch": epoch, "global_step": self.global_step, "seed": self.seed,
            "model": self.model.trainable_state_dict(), "optimizer": self.optim.state_dict(),
            "scheduler": self.sched.state_dict(), "algorithm": self.algorithm.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "rng": rng_state(), "history": self.history, "config": self.cfg.dump(),
            "classnames": self.data.classnames,
        }
        write_checkpoint(state, self.run_dir, epoch, self.cfg.checkpoint_freq)

    def load(self, run_dir: str, full: bool = True) -> None:
        """Restore the run saved in ``run_dir``: everything (``full``, a resume) or the
        trained parameters only (evaluation)."""
        keys = RESUME_KEYS if full else MODEL_KEYS
        self.load_state(read_checkpoint(run_dir, keys, self.device), run_dir, full)

    def load_state(self, state: dict, run_dir: str, full: bool = True) -> None:
        """Restore a state :func:`read_checkpoint` returned (read once per resume)."""
        path = os.path.join(run_dir, LAST)
        try:
            self.model.load_trainable_state_dict(state["model"])
        except (KeyError, RuntimeError) as e:
            raise UserError(f"{path} does not fit this config ({str(e)[:160]}); "
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
        self.history = state["history"]
        log.info("resumed from %s at epoch %d", path, self.start_epoch)

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
        try:
            for epoch in range(self.start_epoch, cfg.num_epochs):
                self.train_epoch(epoch, loaders, writer)
                self.sched.step()
                result = self.evaluate()
                self.record_epoch(epoch, result, writer)
                self.save(epoch + 1)
        finally:
            writer.close()
        return self.summary()

    def train_epoch(self, epoch: int, loaders, writer: SummaryWriter) -> None:
        cfg, model = self.cfg, self.model
        model.train()
        self.algorithm.on_epoch_start(epoch)
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        window: dict[str, torch.Tensor] = {}
        bar = tqdm(zip(*loaders), total=cfg.total_steps, dynamic_ncols=True,
                   desc=f"epoch {epoch + 1}/{cfg.num_epochs}", leave=False,
                   disable=not self.dist.is_main)
        for step, batches in enumerate(bar):
            batch = dict(zip(("x", "y"), batches[0]))
            if len(batches) > 1:
                batch.update(zip(("u_w", "u_s1", "u_s2", "u_idx", "u_true"), batches[1]))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self.precision.autocast():
                loss, logs = self.algorithm.train_step(batch)
            self.optim.zero_grad(set_to_none=True)
            scaler = self.precision.scaler
            if scaler is not None:
                scaler.scale(loss).backward()
                self.dist.average_gradients(self.params)
                scaler.step(self.optim)
                scaler.update()
            else:
                loss.backward()
                self.dist.average_gradients(self.params)
                self.optim.step()
            self.global_step += 1
            for k, v in logs.items():
                window[k] = window.get(k, 0.0) + torch.as_tensor(
                    v, dtype=torch.float32, device=self.device).detach()
            if (step + 1) % cfg.print_freq == 0 or step + 1 == cfg.total_steps:
                keys = sorted(window)  # one all-reduce: the mean over ranks and steps
                sums = self.dist.sum(torch.stack([window[k] for k in keys])) / self.dist.world
                means = dict(zip(keys, (sums / ((step % cfg.print_freq) + 1)).tolist()))
                window.clear()
                self._log_window(epoch, step, means, writer, bar)

    def _log_window(self, epoch, step, means, writer, bar) -> None:
        if not torch.isfinite(torch.tensor(means["loss/total"])):
            raise RuntimeError(f"loss is {means['loss/total']} at epoch {epoch + 1} step "
                               f"{step + 1}; lower lr or use prec fp32")
        lr = self.optim.param_groups[0]["lr"]
        for k, v in means.items():
            writer.add_scalar(f"train/{k}", v, self.global_step)
        writer.add_scalar("train/lr", lr, self.global_step)
        bar.set_postfix(loss=f"{means['loss/total']:.4f}",
                        mask=f"{means.get('pseudo/mask_rate', 0):.2f}", lr=f"{lr:.2e}")
        elapsed = bar.format_dict["elapsed"]
        left = (self.cfg.num_epochs - epoch) * self.cfg.total_steps - step - 1
        eta = elapsed / (step + 1) * left
        progress.info("epoch %d/%d step %d/%d  %s  lr %.3e  eta %s", epoch + 1,
                      self.cfg.num_epochs, step + 1, self.cfg.total_steps,
                      "  ".join(f"{k} {v:.4f}" for k, v in means.items()), lr,
                      bar.format_interval(eta))

    def record_epoch(self, epoch: int, result: dict, writer: SummaryWriter) -> None:
        memory = self.algorithm.pseudo_label_memory()
        if memory is not None:
            chosen = memory[memory >= 0]
            counts = torch.bincount(chosen, minlength=self.data.num_classes).cpu()
            result["pseudo_entropy"] = distribution_entropy(counts)
            truth = self.data.unlabeled_targets.to(memory.device)[memory >= 0]
            known = truth >= 0  # -1: an unlabeled image whose class nobody knows
            result["pseudo_acc"] = top1(chosen[known], truth[known]) if known.any() else 0.0
            result["pseudo_rate"] = chosen.numel() / max(memory.numel(), 1)
            if chosen.numel():  # one bin per class
                edges = np.arange(self.data.num_classes + 1) - 0.5
                writer.add_histogram("pseudo/class", chosen.cpu().numpy(), epoch + 1, bins=edges)
        per_class = result.pop("per_class_acc")
        for k, v in result.items():
            writer.add_scalar(f"epoch/{k}", v, epoch + 1)
        writer.add_histogram("epoch/per_class_acc", np.nan_to_num(np.array(per_class)), epoch + 1)
        result["per_class_acc"] = per_class
        result["epoch"] = epoch + 1
        self.history.append(result)
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
