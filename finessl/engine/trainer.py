"""The training loop: epochs of ``total_steps`` steps, evaluation after each epoch,
tensorboard + text logs, atomic checkpoints and exact resume, also from the middle of
an epoch (a preemption checkpoint). A non-finite step stops the run (``Diverged``);
SIGTERM / SIGUSR1 stop it after the step in progress (``Preempted``); either way the
progress bar is closed first, so the line that says why starts a clean console line.
What a checkpoint holds: checkpoint.py; what is logged and recorded: diagnostics.py."""
from __future__ import annotations

import functools
import logging
import warnings

import torch
from tqdm import tqdm

from finessl.algorithms import ALGORITHMS, build_algorithm
from finessl.data import build_data, build_test_loader
from finessl.distributed import SINGLE, Dist
from finessl.engine import diagnostics, signals
from finessl.engine import preflight
from finessl.engine.batches import Batch, epoch_batches, train_loaders
from finessl.engine.checkpoint import seed_everything, training_state, where, write_checkpoint
from finessl.engine.device import Precision
from finessl.engine.guard import Diverged, StepGuard
from finessl.io import remove_orphan_temps
from finessl.logs import PROGRESS
from finessl.engine.evaluate import evaluate, held_out, unlabeled_predictions
from finessl.engine.optim import build_optimizer
from finessl.engine.teacher import load_teacher
from finessl.models import build_model

log = logging.getLogger(__name__)
progress = logging.getLogger(PROGRESS)


class Trainer:
    """Builds data, model, algorithm and optimiser from ``cfg`` and runs them.

    ``setup``: the device, precision and model config the start worked out
    (:func:`finessl.engine.preflight.check`); without it they are worked out here
    (``precision`` then replaces the one ``cfg.prec`` gives on this device: tests run
    the half-precision modes on a CPU with it)."""

    # draws the report's figures of an epoch for tensorboard (finessl/engine/run.py: train)
    epoch_images = None

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
                               run_dir if write_split and dist.is_main else None, seed)
        self.model = build_model(model_cfg, self.data.classnames, self.device,
                                 self.precision.fp16_params, self.data.mean, self.data.std,
                                 chosen.zero_shot_head)
        self.algorithm = build_algorithm(  # the imbalanced methods read the labeled counts
            cfg, self.model, self.data.num_classes, len(self.data.unlabeled), self.device, dist,
            torch.tensor(self.data.labeled_counts()))
        if chosen.uses_teacher:  # loaded when training needs it (finessl/engine/teacher.py)
            self.algorithm.set_teacher(functools.partial(load_teacher, cfg, self.data,
                                                         self.device, setup.teacher))
        self.params = [p for p in self.model.parameters() if p.requires_grad] \
            + self.algorithm.parameters()  # and the algorithm's own heads
        if self.algorithm.trains:
            self.optim, self.sched = build_optimizer(cfg, self.params)
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0
        self.saved: str | None = None  # where the checkpoint on disk is: 'epoch E [step S]'
        self.history: list[dict] = []
        self.confusion: list[list[int]] | None = None  # of the last evaluation (the report's)
        self.epoch_means = diagnostics.EpochMeans()  # each epoch's mean training logs
        self._test_loader = None
        diagnostics.log_parameter_counts(self.model, self.params)

    # ---- checkpoints -------------------------------------------------------------
    def save(self, epoch: int, step: int = 0) -> None:
        """``epoch`` epochs done and ``step`` steps of the next (0: an end-of-epoch
        checkpoint). Rank 0 writes; every rank holds the same state (tested), so one
        file serves all."""
        self.saved = where({"epoch": epoch, "step": step})
        if self.dist.is_main:
            write_checkpoint(training_state(self, epoch, step), self.run_dir, epoch,
                             self.cfg.checkpoint_freq if not step else 0,
                             best_val=not step and diagnostics.is_best_val(self.history))

    # ---- training ----------------------------------------------------------------
    def fit(self) -> dict:
        """Train from where the run stands (its start or a resumed checkpoint) to
        ``num_epochs``; the best and last test top-1 (results.json)."""
        cfg = self.cfg
        writer = diagnostics.open_writer(self.run_dir, self.global_step, self.dist.is_main)
        if not self.algorithm.trains:
            diagnostics.record_epoch(self, -1, self.evaluate(), writer)
            writer.close()
            return diagnostics.summary(self.history)
        loaders = self.train_loaders()
        self.guard = StepGuard(self.model, self.params, self.precision, self.dist, self.device)
        try:
            with signals.deferred():
                for epoch in range(self.start_epoch, cfg.num_epochs):
                    start = self.start_step if epoch == self.start_epoch else 0
                    if start == 0 and self.algorithm.relabels_at(epoch):
                        self.relabel(epoch)
                        loaders = self.train_loaders()
                    self.train_epoch(epoch, loaders, writer, start)
                    with warnings.catch_warnings():  # resumed after the epoch's last step:
                        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
                        self.sched.step()  # no optimizer step in this process yet, rightly
                    result = self.evaluate()
                    diagnostics.record_epoch(self, epoch, result, writer)
                    self.save(epoch + 1)
                    if epoch + 1 < cfg.num_epochs and self.guard.stop_requested():
                        self.guard.stop(f"after epoch {epoch + 1}/{cfg.num_epochs}", self.run_dir)
        except Diverged as e:
            progress.error("%s", e)  # log.txt; main.py prints it on the console
            raise
        finally:
            writer.close()
        return diagnostics.summary(self.history)

    def train_loaders(self) -> list:
        """The epoch's loaders (finessl/engine/batches.py), over the labeled set as the
        algorithm's state has it (with the images it added: a resumed run's too)."""
        return train_loaders(self.cfg, self.data, self.seed, self.device, self.dist,
                             self.algorithm)

    def relabel(self, epoch: int) -> None:
        """Before epoch ``epoch``: the algorithm chooses anew the pseudo-labelled images of
        the labeled set from the unlabeled set's predictions (``Algorithm.relabels_at``).
        At an epoch's start only, so a resumed epoch keeps the choice its checkpoint holds."""
        self.algorithm.choose_labeled(*unlabeled_predictions(self))
        positions, labels = self.algorithm.added_labeled()
        truth = self.data.unlabeled_targets[positions]
        right = (truth == labels)[truth >= 0].float().mean().item()  # nan: no truth known
        log.info("epoch %d/%d: %d pseudo-labelled images join the %d of the labeled set "
                 "(%.1f%% right, of those of a known class)", epoch + 1, self.cfg.num_epochs,
                 len(labels), len(self.data.labeled_idx), 100 * right)

    def optimizer_step(self, batches, epoch: int, step: int) -> tuple[dict, bool]:
        """One optimizer step; its logs, and whether a signal asked to stop after it."""
        batch = Batch.from_loaders(batches).to(self.device)
        with self.precision.autocast():
            loss, logs = self.algorithm.train_step(batch)
        self.optim.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()
        self.dist.average_gradients(self.params)
        finite, stop = self.guard.check(loss)
        if not finite:  # before the update: nothing non-finite reaches a parameter
            raise self.guard.diverged(loss, logs, epoch, step, self.cfg.num_epochs,
                                      self.cfg.total_steps, self.saved)
        if scaler is not None:
            scaler.step(self.optim)
            scaler.update()
        else:
            self.optim.step()
        self.algorithm.after_step()
        self.global_step += 1
        return logs, stop

    def train_epoch(self, epoch: int, loaders, writer, start: int = 0) -> None:
        """Epoch ``epoch`` from step ``start`` on (> 0: resumed from a mid-epoch
        checkpoint, which holds the algorithm's state of that step)."""
        cfg, model = self.cfg, self.model
        model.train()
        if start == 0:
            self.algorithm.on_epoch_start(epoch)
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        window = diagnostics.StepWindow(self.device)
        stopped_after = 0  # a signal asked to stop after this step: the bar closes first
        with epoch_batches(loaders, start) as stream, tqdm(
                stream, total=cfg.total_steps, initial=start, dynamic_ncols=True,
                desc=f"epoch {epoch + 1}/{cfg.num_epochs}", leave=False,
                disable=not self.dist.is_main) as bar:
            for step, batches in enumerate(bar, start):  # a Diverged step leaves it closed
                logs, stop = self.optimizer_step(batches, epoch, step)
                window.add(logs)
                if (step + 1) % cfg.print_freq == 0 or step + 1 == cfg.total_steps:
                    diagnostics.log_window(self, epoch, step, step + 1 - start,
                                           window.means(self.dist), writer, bar)
                if stop:
                    self.save(epoch, step + 1)
                    stopped_after = step + 1
                    break
        if stopped_after:
            self.guard.stop(f"at epoch {epoch + 1}/{cfg.num_epochs} step {stopped_after}/"
                            f"{cfg.total_steps}", self.run_dir)

    def evaluate(self) -> dict:
        """The test metrics, and where the run has them the validation split's and the
        label-free selection signals (:func:`finessl.engine.evaluate.held_out`)."""
        if self._test_loader is None:
            self._test_loader = build_test_loader(self.data, max(100, self.cfg.DATA.BATCH_SIZE),
                                                  self.cfg.num_workers, self.dist.rank,
                                                  self.dist.world)
        with self.algorithm.evaluation_weights():  # the model its paper evaluates
            result = evaluate(self.model, self._test_loader, self.device, self.precision,
                              self.data.num_classes, self.dist, len(self.data.test))
            result.update(held_out(self))
        return result
