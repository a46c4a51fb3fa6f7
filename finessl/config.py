"""The one yacs defaults tree: every key FineSSL reads, with its meaning.

Key names are the authors' (Gank0078/FineSSL ``utils/config.py``), so a YAML written
for the released code loads unchanged. Defaults are the released settings of
docs/method.md §3-4 (the YAMLs under ``configs/peft/``), not the authors' code defaults.

Plug-ins (datasets, PEFT methods, backbones, algorithms) declare their own keys beside
their code with :func:`declare`; the tree gathers them when their modules are imported.

Loading goes through :func:`finessl.config_load.load_config`, which turns every
mistake a user can make (unknown key, wrong type, bad value) into a
:class:`~finessl.errors.UserError`; how a value is read and checked is
:mod:`finessl.config_values`.
"""
from __future__ import annotations

from typing import Callable

from yacs.config import CfgNode as CN

_C = CN()

# ---- data ---------------------------------------------------------------------------
_C.DATA = CN()
_C.DATA.NAME = "CIFAR100"  # dataset: a registered name: CIFAR10, CIFAR100, CIFAR100_OpenSet, FOOD101, Semi_Aves, semi_ImageNet, FashionMNIST, ImageFolder or your plug-in (datasets/README.md)
_C.DATA.DATAPATH = "datasets/cifar-100"  # folder holding the dataset files (see datasets/README.md)
_C.DATA.DOWNLOAD = True  # fetch the dataset when missing (only where a network exists)
_C.DATA.NUMBER_CLASSES = -1  # number of classes; -1 takes it from the dataset
_C.DATA.NUM_TEST = 0  # evaluate on the first N test images only (0 = the whole test set)
_C.DATA.NUM_L = 4  # labeled images per class (the largest class when IMB_L > 1)
_C.DATA.NUM_U = 500  # extra unlabeled images per class (the largest class when IMB_U > 1)
_C.DATA.IMB_L = 1.0  # imbalance ratio of the labeled set (1 = balanced)
_C.DATA.IMB_U = 1.0  # imbalance ratio of the unlabeled set (1 = balanced)
_C.DATA.MU_U = 2  # unlabeled batch = MU_U * BATCH_SIZE (the released default 2; the CIFAR, Food-101 and Semi-Aves configs set 1)
_C.DATA.BATCH_SIZE = 32  # labeled images per step
_C.DATA.UNLABELED = "dataset"  # unlabeled pool: 'dataset' = the released rule (CIFAR: first NUM_L+NUM_U per class; Food-101: the whole train split), 'num_u' = first NUM_L+NUM_U per class, 'all' = the whole train split
_C.DATA.NORMALIZE = "dataset"  # input mean/std: 'dataset' = the released per-dataset values (CIFAR's own, ImageNet's for Food-101), 'clip' = CLIP's
_C.DATA.REPLAY = True  # each epoch replays its loaders' first pass (the released itertools.cycle); False = fresh batches every step
_C.DATA.CUTOUT = 16  # strong views' Cutout: a fixed square of this many px (the released 16); -1 = FixMatch's random side up to half the image; 0 = none
_C.num_workers = 8  # dataloader worker processes

# ---- model --------------------------------------------------------------------------
_C.backbone = "ViT-B/16"  # open_clip model name; the authors' 'ViT-B/16' spelling is accepted
_C.pretrained = "openai"  # open_clip pretrained tag, a local weights file, or 'none' (random init)
_C.cache_dir = ""  # where open_clip / Hugging Face cache weights ('' = their default)
_C.prec = "fp16"  # fp16 (the released: backbone and trained tensors are fp16 parameters, no grad scaler), amp (fp32 weights, fp16 autocast + grad scaler), bf16 (fp32 weights, bf16 autocast) or fp32
_C.input_size = 0  # side of the views fed to the backbone; 0 = the model's own (224 for ViT-B/16)
# ---- fine-tuning strategy (docs/method.md §1; none switched on = linear probe of the heads)
_C.partial = None  # PEFT modules (and BitFit / finetune) only in the last K blocks (None = all)
_C.rand_init = True  # heads start random (True) or from CLIP text embeddings (False)
_C.template = "a photo of a {}."  # text prompt for the text-initialised heads
_C.grad_checkpointing = False  # recompute block activations in backward: less memory, ~1/3 more time
_C.compile = False  # torch.compile the backbone forward (fused kernels; first steps compile)

# ---- algorithm (docs/method.md §3, §5) ---------------------------------------------------
_C.algorithm = "finessl"  # finessl, supervised, zeroshot, pseudolabel, fixmatch, flexmatch, freematch, softmatch, debiaspl, semikd (a trained run teaches a student: KD True, docs/semikd.md)
_C.bms = None  # Balanced Margin Softmax on/off; None = on for finessl only
_C.dls = None  # Decoupled Label Smoothing (aux head) on/off; None = on for finessl only
_C.bms_fixed_alpha = False  # ablation: margin spread fixed to alpha instead of (max-min pace) * alpha
_C.bms_labeled = True  # BMS margins also on the supervised loss L_x (False: ablation)
_C.aux_detach = True  # aux head sees detached features (False: ablation, aux losses reach PEFT)
_C.th = 0.7  # confidence threshold zeta for pseudo-labels and the learning pace
_C.th_min = 0.0  # aux-confidence floor below which an unlabeled sample gets weight 0
_C.alpha = 8.0  # scale of the balanced margins
_C.bms_form = "released"  # margin m(k): 'released' (1-b)/(1+b)*spread or 'paper' (1-b)*spread
_C.w_con = 3.0  # weight gamma of the unlabeled loss L_u
_C.smoothing = 0.5  # label smoothing lambda of the aux head's unlabeled targets

# ---- optimisation (docs/method.md §4) ----------------------------------------------------
_C.num_epochs = 30  # epochs; the cosine schedule steps once per epoch
_C.total_steps = 500  # optimizer steps per epoch
_C.lr = 0.03  # SGD learning rate
_C.momentum = 0.9  # SGD momentum
_C.weight_decay = 5e-4  # SGD weight decay
_C.seed = None  # random seed; None draws one and records it in the run's config.yaml

# ---- run ----------------------------------------------------------------------------
_C.output_dir = None  # run folder; may hold {seed}, {algorithm} and {config} (the --cfg file's name) fields; None = out/<DATA.NAME>_N<NUM_L>/{algorithm}/seed{seed}
_C.resume = None  # run folder to continue from its last checkpoint; its config.yaml is the base, and only runtime keys may differ (docs/running.md#resume)
_C.allow_extend = False  # with resume: num_epochs N above the run's own continues it to N epochs, the cosine schedule recomputed for N from the current epoch on (docs/running.md#resume)
_C.checkpoint_freq = 0  # also keep a checkpoint every K epochs (0 = only the last)
_C.print_freq = 10  # write a progress line to log.txt every K steps
_C.eval_only = False  # evaluate the checkpoint in model_dir and exit
_C.model_dir = None  # run folder evaluated by eval_only
_C.gpu = None  # CUDA device index; None = cuda:0 when CUDA exists, else CPU
_C.deterministic = False  # torch deterministic algorithms (slower on CUDA)
_C.setting = ""  # name of this setting in sweeps, summarize.py and reports; '' = the --cfg file's name (else DATA.NAME_N<NUM_L>)
_C.paper_top1 = None  # the paper's top-1 (%) for this setting, shown beside the results by summarize.py and reports (None: the paper has none)
_C.plugins = []  # your plug-in modules (module names or .py paths), imported before the rest of the config is read (docs/extending.md)

# Keys of the authors' code that do nothing here: accepted, reported in one warning.
INERT_KEYS = (
    "dataset", "root", "resolution", "stride", "batch_size", "tau", "downsampling",
    "n_max", "test_ensemble", "vpt_last", "lam_tokens", "scalar_learnable",
    "adapter_scalar", "block_num", "patch_size", "mode", "rand_init1",
    "load_epoch", "DATA.NUM_WORKERS",
)
# Types accepted for keys whose default is None.
NONE_TYPES = {
    "bms": (bool,), "dls": (bool,),
    "seed": (int,), "output_dir": (str,), "resume": (str,), "model_dir": (str,),
    "gpu": (int,), "partial": (int,), "paper_top1": (float, int),
}
CHOICES = {
    "prec": ("fp16", "fp32", "amp", "bf16"),
    "DATA.UNLABELED": ("dataset", "num_u", "all"),
    "DATA.NORMALIZE": ("dataset", "clip"),
    "bms_form": ("released", "paper"),
}

# ---- resume (docs/running.md#resume) ------------------------------------------------------
RUN_CONFIG = "config.yaml"  # a run folder's record of the config it trains with
# The one allow-list: keys a resumed run (``resume RUN``) may set to other values than
# RUN/config.yaml's. They change how the run executes (workers, logging, where the
# files go, which device, kernels, memory), never what it trains. Every other key
# shapes training and must keep the run's value; three follow rules of their own:
# ``seed`` None means the run's seed, ``plugins`` may be respelled or reordered but
# must name the same modules, and ``num_epochs`` may grow with ``allow_extend True``.
RESUME_RUNTIME_KEYS = (
    "num_workers", "print_freq", "checkpoint_freq", "gpu", "deterministic", "compile",
    "grad_checkpointing", "cache_dir", "DATA.DOWNLOAD", "output_dir", "resume",
    "model_dir", "eval_only", "allow_extend", "setting", "paper_top1",
)
# ... and what eval_only / predict may also set: where the test data is, how much of it,
# the numeric mode of the forward.
EVAL_RUNTIME_KEYS = RESUME_RUNTIME_KEYS + ("DATA.DATAPATH", "DATA.NUM_TEST", "prec")
INT_RANGE = 2**63  # ints must fit a signed 64-bit integer (torch's seeds and sizes)

CHECKS: dict[str, Callable[[object], str | None]] = {}
_DECLARED: dict[str, tuple[object, str]] = {}


def positive(value) -> str | None:
    """A ``check`` for :func:`declare`: the value must be > 0."""
    return None if value > 0 else "must be positive"


def non_negative(value) -> str | None:
    """A ``check`` for :func:`declare`: the value must be >= 0 (a loss weight)."""
    return None if value >= 0 else "must be >= 0"


def momentum(value) -> str | None:
    """A ``check`` for :func:`declare`: an EMA momentum in [0, 1)."""
    return None if 0.0 <= value < 1.0 else "an EMA momentum must lie in [0, 1)"


def declare(key: str, default, comment: str, choices: tuple | None = None,
            check: Callable[[object], str | None] | None = None) -> None:
    """Add a plug-in's own config key to the defaults tree, from beside its code.

    ``key`` is dotted (``FLEXMATCH.WARMUP`` creates the node ``FLEXMATCH``); its type is
    the default's. ``choices`` lists the values allowed; ``check(value)`` returns why a
    value is wrong, or None. ``comment`` is the key's line in docs/configuration.md.
    Declaring a key twice is allowed only with the same default (a module imported
    again).
    """
    if key in _DECLARED:
        if _DECLARED[key][0] != default:
            raise ValueError(f"config key {key} declared twice with different defaults")
        return
    *parents, leaf = key.split(".")
    node = _C
    for p in parents:
        if p not in node:
            node[p] = CN()
        node = node[p]
    if leaf in node:
        raise ValueError(f"config key {key} is already in the defaults tree")
    node[leaf] = default
    _DECLARED[key] = (default, comment)
    if choices:
        CHOICES[key] = tuple(choices)
    if check:
        CHECKS[key] = check


# Plug-ins' rewrites of the (key, value) pairs a config is read from, in order, before
# anything is merged: where an authors' switch means more than one key here (SemiKD's
# ``KD True`` selects an algorithm, and its ``resume TEACHER`` names the teacher).
# Each takes and returns the list of (pairs, source name) of the file and the command line.
PAIR_REWRITES: list[Callable[[list], list]] = []


def rewrite_pairs(rewrite: Callable[[list], list]) -> Callable[[list], list]:
    """Decorator: register a rewrite of the config's (key, value) pairs (see above)."""
    if rewrite not in PAIR_REWRITES:
        PAIR_REWRITES.append(rewrite)
    return rewrite


def declared_keys() -> dict[str, tuple[object, str]]:
    """Plug-ins' keys so far: dotted key -> (default, comment)."""
    return dict(_DECLARED)


def get_cfg_defaults() -> CN:
    """A fresh copy of the defaults tree: the keys of this file and those the imported
    plug-ins declared (all built-in ones once :mod:`finessl.plugins` is imported)."""
    return _C.clone()


def all_keys(node: CN, prefix: str = "") -> list[str]:
    """Every leaf key of a config tree, dotted (``DATA.NUM_L``)."""
    keys = []
    for k, v in node.items():
        keys.extend(all_keys(v, f"{prefix}{k}.") if isinstance(v, CN) else [f"{prefix}{k}"])
    return keys
