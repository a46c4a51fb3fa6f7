"""What every semi-supervised algorithm is: a small class with a train step and state,
and the few things the engine reads from it, declared here with their defaults."""
from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
import torch.nn as nn

from finessl.config import cross_check
from finessl.distributed import SINGLE, Dist
from finessl.errors import UserError
from finessl.metrics import PseudoLabelStats
from finessl.registry import Registry

ALGORITHMS = Registry("algorithm", "algorithm")
register = ALGORITHMS.register  # class decorator: ``@register("mymatch")``


# why an algorithm without pseudo-labels refuses ``bms True`` / ``dls True``
NO_PSEUDO_LABELS = ("makes no pseudo-labels (BMS's margins follow the learning pace of "
                    "pseudo-labels and DLS smooths them)")


class Algorithm:
    """Base class. Subclasses implement :meth:`train_step`.

    ``train_step(batch)`` gets one labeled + unlabeled batch already on the device (a
    :class:`finessl.engine.batches.Batch`, read as ``batch["x"]`` or ``batch.x``:
    ``x``, ``y``, ``u_w``, ``u_s1``, ``u_s2``, ``u_idx``, ``u_true``; a plain dict with
    those keys does as well) and returns ``(loss, logs)``; ``logs`` holds floats or
    0-dim tensors named as in tensorboard. Counters and EMAs live in tensors saved by
    :meth:`state_dict`, so resuming is exact.

    What the engine reads, besides the step (finessl/engine/diagnostics.py and the
    run report, docs/results.md#the-run-report), is declared below with defaults that
    fit an algorithm without pseudo-labels: no BMS, no DLS, no confidence histograms,
    no pseudo-label memory. An algorithm that has them says so by overriding them.
    """

    name = "base"  # set by ``@register``: the config's ``algorithm`` value
    order = 100  # its row in sweep tables: the paper's order for the built-ins, then by name
    dist: Dist = SINGLE  # set by build_algorithm; all-gathers for multi-process runs
    labeled_counts: torch.Tensor | None = None  # labeled images per class (build_algorithm)
    num_labeled = 0  # size of the labeled set (set by build_algorithm before __init__)
    uses_unlabeled = True  # False: the loop feeds labeled batches only (no ``u_*`` keys)
    trains = True  # False: nothing to train, the run only evaluates (zero-shot CLIP)
    zero_shot_head = False  # True: the main head is CLIP's text classifier (build_model)
    uses_teacher = False  # True: the trainer hands it a frozen trained model (set_teacher)
    long_tailed_only = False  # True: made for long-tailed data (ACR): no row in balanced tables
    labeled_strong = False  # True: batches carry ``x_s``, a strong view of each labeled image
    unlabeled_medium = False  # True: batches carry ``u_m``, a medium view of each unlabeled one
    # True: keeps state per labeled image, by its position ``x_idx`` (SimMatch's bank), so
    # its labeled set cannot grow during the run (an imbalanced method that adds to it)
    labeled_state = False

    # ---- what the engine reads (diagnostics, the report) -----------------------------
    uses_finessl_components = False  # what bms / dls are by default: the method label
    # names only the components switched away from it (``flexmatch+bms``, ``finessl-dls``)
    bms = False  # Balanced Margin Softmax is on (docs/method.md §3)
    dls = False  # Decoupled Label Smoothing is on: the aux head learns (else it stays as built)
    stats: PseudoLabelStats | None = None  # this epoch's confidence histograms, if it has them
    # why FineSSL's components cannot apply to it ('': they can, or it ignores them):
    # ``bms True`` / ``dls True`` with it then fail at config time, naming this reason
    refuses_components = ""

    def __init__(self, cfg, model: nn.Module, num_classes: int, num_unlabeled: int,
                 device: torch.device):
        self.cfg = cfg
        self.model = model
        self.num_classes = num_classes
        self.num_unlabeled = num_unlabeled
        self.device = device
        statistics = self.initial_statistics()
        self._statistics = tuple(statistics)
        for name, value in statistics.items():
            setattr(self, name, value)
        # trained modules of the algorithm's own (rotation, projection heads): trained
        # with the model's parameters, saved and restored with the algorithm's state
        feat_dim = getattr(getattr(model, "backbone", None), "feat_dim", 0)  # 0: a stand-in model
        self.modules = nn.ModuleDict(self.extra_modules(feat_dim)).to(device)

    def extra_modules(self, feat_dim: int) -> dict[str, nn.Module]:
        """Heads the algorithm trains on the backbone's ``feat_dim`` features besides the
        model's own, by name (``self.modules[name]``): the optimiser trains them, the
        gradients are averaged across ranks and they are checkpointed; none by default."""
        return {}

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of :meth:`extra_modules` (the trainer adds them to
        the model's)."""
        return [p for p in self.modules.parameters() if p.requires_grad]

    def after_step(self) -> None:
        """Called after each optimiser step (an EMA of the weights follows them here)."""

    def evaluation_weights(self):
        """A context in which the model holds the weights the algorithm's paper
        evaluates (Mean Teacher: the EMA's); by default the model as it is."""
        return contextlib.nullcontext()

    @classmethod
    def evaluated_state(cls, state: dict | None) -> dict[str, torch.Tensor] | None:
        """From a checkpoint's algorithm state, the model's trained tensors to evaluate
        and predict with when they are not the trained model's own (the EMA model of
        Mean Teacher); None: the model's own."""
        return None

    def initial_statistics(self) -> dict[str, torch.Tensor]:
        """The tensors the algorithm keeps from step to step (EMAs, histograms, flags), by
        name, at their starting values: each becomes an attribute of that name, updated
        in place, and is saved and restored under that name by :meth:`state_dict`, so
        resuming is exact without code of the algorithm's own."""
        return {}

    def uniform(self) -> torch.Tensor:
        """The uniform distribution over the classes: where class-distribution EMAs start."""
        return torch.full((self.num_classes,), 1.0 / self.num_classes, device=self.device)

    @classmethod
    def model_config(cls, cfg):
        """The config the trained (and evaluated) model is built from: ``cfg`` itself,
        except where the algorithm trains another model than the one the main keys
        describe (SemiKD: the student of the ``stu_*`` keys)."""
        return cfg

    def set_teacher(self, load) -> None:
        """``load()`` returns the frozen trained model the algorithm learns from; the
        trainer hands it over when ``uses_teacher``, to be called only when needed."""

    def on_epoch_start(self, epoch: int) -> None:
        """Reset per-epoch state."""

    def train_step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    # ---- a labeled set that grows during the run (CReST) -----------------------------
    def relabels_at(self, epoch: int) -> bool:
        """Whether pseudo-labelled images are chosen anew for the labeled set before epoch
        ``epoch``'s first step: the trainer then predicts the unlabeled set and hands the
        predictions to :meth:`choose_labeled`. Never, by default."""
        return False

    def choose_labeled(self, positions: torch.Tensor, probs: torch.Tensor) -> None:
        """Choose the unlabeled images that join the labeled set, and their labels, in
        place of those chosen before: ``probs`` (N x C, float) are the main head's class
        probabilities of the unlabeled images at ``positions`` (those that are not labeled
        images too), on their evaluation view and with :meth:`evaluation_weights`, the same
        on every rank. The choice is the algorithm's state (a statistic: checkpointed),
        read back by :meth:`added_labeled`."""
        raise NotImplementedError

    def added_labeled(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(positions in the unlabeled set, labels) of the images the labeled set holds
        besides its own, in the order they follow them there; None: none (the default).
        The trainer's loaders serve them, a resumed run's too."""
        return None

    def pseudo_label_memory(self) -> torch.Tensor | None:
        """Current pseudo-label per unlabeled image (-1 = none), for diagnostics; None:
        the algorithm keeps no pseudo-labels."""
        return None

    def method_label(self) -> str:
        """``flexmatch+bms+dls``: the algorithm's name, and each FineSSL component that
        is switched away from the algorithm's default (``+`` on, ``-`` off): what the
        report and a sweep's tables call the run."""
        parts = [self.name]
        for component, value in (("bms", self.bms), ("dls", self.dls)):
            if value != self.uses_finessl_components:
                parts.append(("+" if value else "-") + component)
        return "".join(parts)

    def state_dict(self) -> dict:
        """The algorithm's state between steps: its statistics, its modules' weights
        (``modules``, when it has any) and what a subclass adds."""
        state = {name: getattr(self, name).clone() for name in self._statistics}
        if len(self.modules):
            state["modules"] = {k: v.detach().clone()
                                for k, v in self.modules.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved, in place."""
        for name in self._statistics:
            getattr(self, name).copy_(state[name].to(self.device))
        if len(self.modules):
            self.modules.load_state_dict(state["modules"])


@cross_check
def _components_apply(cfg) -> None:
    """``bms True`` / ``dls True`` only with an algorithm they can apply to."""
    why = ALGORITHMS.get(cfg.algorithm).refuses_components
    asked = [key for key in ("bms", "dls") if cfg[key]]
    if why and asked:
        raise UserError(f"{' and '.join(k + ' True' for k in asked)}: algorithm {cfg.algorithm} "
                        f"{why}; drop {' and '.join(asked)}")
