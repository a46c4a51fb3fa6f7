"""The one yacs defaults tree: every key FineSSL reads, its meaning and its check.

Key names are the authors' (Gank0078/FineSSL ``utils/config.py``), so a YAML written
for the released code loads unchanged. Defaults are the released settings of
docs/method.md §3-4 (the YAMLs under ``configs/peft/``), not the authors' code defaults.

Every key is declared one way, with :func:`declare`: the core keys below, and the
plug-ins' (datasets, PEFT methods, backbones, algorithms) beside their code, gathered
when their modules are imported. A declaration carries the key's default (its type),
its one-line meaning (docs/configuration.md), and what a value must be: ``types`` (for
a None default), ``choices``, ``check``. Checks that read two keys are
:func:`cross_check` functions, kept with the code that owns the keys.

Loading goes through :func:`finessl.config_load.load_config`, which turns every
mistake a user can make (unknown key, wrong type, bad value) into a
:class:`~finessl.errors.UserError`; how a value is read and checked is
:mod:`finessl.config_values`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from yacs.config import CfgNode as CN

from finessl.errors import UserError

_C = CN()


@dataclass(frozen=True)
class Key:
    """One declared key: ``default`` (its type, unless None: then ``types``), ``comment``
    (its line in docs/configuration.md), ``choices``, ``check(value)`` (why a value is
    wrong, or None; not asked about None), and ``shapes_model``: the key sizes or
    selects the model's tensors, so a SemiKD teacher must agree on it
    (:func:`model_keys`)."""

    default: object
    comment: str
    choices: tuple | None = None
    check: Callable[[object], str | None] | None = None
    types: tuple[type, ...] | None = None
    shapes_model: bool = False


KEYS: dict[str, Key] = {}  # dotted key -> its declaration, in declaration order
# Checks that read more than one key: ``check(cfg)`` raises a UserError (registered
# with :func:`cross_check` by the code that owns the keys).
CROSS_CHECKS: list[Callable[[CN], None]] = []


def declare(key: str, default, comment: str, choices: tuple | None = None,
            check: Callable[[object], str | None] | None = None,
            types: tuple[type, ...] | None = None, shapes_model: bool = False) -> None:
    """Add a config key to the defaults tree, from beside the code that reads it.

    ``key`` is dotted (``FLEXMATCH.WARMUP`` creates the node ``FLEXMATCH``); its type is
    the default's, or one of ``types`` when the default is None. ``choices`` lists the
    values allowed; ``check(value)`` returns why a value is wrong, or None. ``comment``
    is the key's line in docs/configuration.md. ``shapes_model`` marks a key that sizes
    the model's tensors (a SemiKD teacher must match it). Declaring a key twice is
    allowed only with the same default (a module imported again).
    """
    if key in KEYS:
        if KEYS[key].default != default:
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
    KEYS[key] = Key(default, comment, tuple(choices) if choices else None, check,
                    tuple(types) if types else None, shapes_model)


def cross_check(check: Callable[[CN], None]) -> Callable[[CN], None]:
    """Decorator: register a check of a whole config (two keys that must agree)."""
    if check not in CROSS_CHECKS:
        CROSS_CHECKS.append(check)
    return check


def starts_within_the_run(key: str, value: int, first: int, last: int, unit: str,
                          method: str) -> None:
    """A warm-up key (``key`` = ``value``) after which ``method`` acts from ``unit``
    ``first`` (from 1) on must leave it room in a run of ``last`` of them: otherwise the
    run is silently its base algorithm."""
    if first > last:
        raise UserError(f"{key} {value}: {method} would act from {unit} {first} on, past "
                        f"the run's last ({last}); set {key} to at most {value - (first - last)}")


def show(value) -> str:
    """A value in a one-line message: strings quoted (so a newline shows as \\n), long
    values cut."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= 200 else text[:200] + "..."


# ---- checks for ``declare(check=...)``: why a value is wrong, or None ---------------------
def positive(value) -> str | None:
    """The value must be > 0 (a count, a size)."""
    return None if value > 0 else "must be positive"


def non_negative(value) -> str | None:
    """The value must be >= 0 (a loss weight, a count that may be zero)."""
    return None if value >= 0 else "must be >= 0"


def non_negative_or_null(value) -> str | None:
    """An index or seed: >= 0 (None, the default, is never checked)."""
    return None if value >= 0 else "must be >= 0 (or null)"


def momentum(value) -> str | None:
    """An EMA momentum in [0, 1)."""
    return None if 0.0 <= value < 1.0 else "an EMA momentum must lie in [0, 1)"


def sgd_momentum(value) -> str | None:
    return None if 0.0 <= value < 1.0 else "SGD momentum must lie in [0, 1)"


def last_blocks(value) -> str | None:
    return None if value > 0 else "the number of last blocks must be positive"


def imbalance_ratio(value) -> str | None:
    return None if value >= 1.0 else "imbalance ratio must be >= 1"


def signed_imbalance_ratio(value) -> str | None:
    return None if abs(value) >= 1.0 else \
        "imbalance ratio must be >= 1, or <= -1 for a reversed profile"


def threshold(value) -> str | None:
    return None if 0.0 <= value <= 1.0 else "a confidence threshold must lie in [0, 1]"


def smoothing(value) -> str | None:
    return None if 0.0 <= value < 1.0 else "must lie in [0, 1)"


def cutout_side(value) -> str | None:
    return None if value >= -1 else "a side in px, -1 (FixMatch's random side) or 0 (none)"


def class_template(value: str) -> str | None:
    """A format string with one ``{}`` for the class name (the text heads' prompt)."""
    if "{}" not in value:
        return "needs a '{}' for the class name"
    try:
        value.format("class name")
    except (IndexError, KeyError, ValueError) as e:
        raise UserError(f"template: {show(value)} is not a format string with one '{{}}' "
                        f"({type(e).__name__}: {show(str(e))}); write other braces as "
                        f"'{{{{' and '}}}}'") from None
    return None


# ---- the core keys --------------------------------------------------------------------
declare("DATA.NAME", "CIFAR100", "dataset: a registered name: CIFAR10, CIFAR100, CIFAR100_OpenSet, FOOD101, Semi_Aves, semi_ImageNet, FashionMNIST, ImageFolder or your plug-in (datasets/README.md)", shapes_model=True)
declare("DATA.DATAPATH", "datasets/cifar-100", "folder holding the dataset files (see datasets/README.md)")
declare("DATA.DOWNLOAD", True, "fetch the dataset when missing (only where a network exists)")
declare("DATA.NUMBER_CLASSES", -1, "number of classes; -1 takes it from the dataset")
declare("DATA.NUM_TEST", 0, "evaluate on the first N test images only (0 = the whole test set)", check=non_negative)
declare("DATA.NUM_L", 4, "labeled images per class (the largest class when IMB_L > 1)", check=positive)
declare("DATA.NUM_U", 500, "extra unlabeled images per class (the largest class when IMB_U is not 1)", check=non_negative)
declare("DATA.IMB_L", 1.0, "imbalance ratio of the labeled set (1 = balanced)", check=imbalance_ratio)
declare("DATA.IMB_U", 1.0, "imbalance ratio of the unlabeled set: 1 = uniform, IMB_L = consistent with the labeled set, negative = reversed (its largest class is the labeled set's smallest, USB's r_ulb < 0)", check=signed_imbalance_ratio)
declare("DATA.MU_U", 2, "unlabeled batch = MU_U * BATCH_SIZE (the released default 2; the CIFAR, Food-101 and Semi-Aves configs set 1)", check=positive)
declare("DATA.BATCH_SIZE", 32, "labeled images per step", check=positive)
declare("DATA.UNLABELED", "dataset", "unlabeled pool: 'dataset' = the released rule (CIFAR: first NUM_L+NUM_U per class; Food-101: the whole train split), 'num_u' = first NUM_L+NUM_U per class, 'all' = the whole train split", choices=("dataset", "num_u", "all"))
declare("DATA.NORMALIZE", "dataset", "input mean/std: 'dataset' = the released per-dataset values (CIFAR's own, ImageNet's for Food-101), 'clip' = CLIP's", choices=("dataset", "clip"))
declare("DATA.REPLAY", True, "each epoch replays its loaders' first pass (the released itertools.cycle); False = fresh batches every step")
declare("DATA.CUTOUT", 16, "strong views' Cutout: a fixed square of this many px (the released 16); -1 = FixMatch's random side up to half the image; 0 = none", check=cutout_side)
declare("num_workers", 8, "dataloader worker processes", check=non_negative)

# ---- model --------------------------------------------------------------------------
declare("backbone", "ViT-B/16", "open_clip model name; the authors' 'ViT-B/16' spelling is accepted", shapes_model=True)
declare("pretrained", "openai", "open_clip pretrained tag, a local weights file, or 'none' (random init)")
declare("cache_dir", "", "where open_clip / Hugging Face cache weights ('' = their default)")
declare("prec", "fp16", "fp16 (the released: backbone and trained tensors are fp16 parameters, no grad scaler), amp (fp32 weights, fp16 autocast + grad scaler), bf16 (fp32 weights, bf16 autocast) or fp32", choices=("fp16", "fp32", "amp", "bf16"))
declare("input_size", 0, "side of the views fed to the backbone; 0 = the model's own (224 for ViT-B/16)", check=non_negative)
# ---- fine-tuning strategy (docs/method.md §1; none switched on = linear probe of the heads)
declare("partial", None, "PEFT modules only in the last K blocks (None = all); BitFit / finetune and VPT-shallow ignore it, as released, unless partial_weights / partial_shallow", types=(int,), check=last_blocks, shapes_model=True)
declare("partial_weights", False, "partial K also limits BitFit and finetune to the last K blocks plus ln_post (False: the released, every bias / weight of the tower)", shapes_model=True)
declare("partial_shallow", False, "vpt_shallow with partial K: the prompts enter at block L-K (False: the released, at block 0)", shapes_model=True)
declare("block_num", None, "finetune trains the last K blocks' weights only (None = the whole tower), as released", types=(int,), check=last_blocks, shapes_model=True)
declare("rand_init", True, "heads start random (True) or from CLIP text embeddings (False)")
declare("text_init_unit", False, "rand_init False: rows of W = T P^T scaled to unit norm (False: the released, unscaled)")
declare("template", "a photo of a {}.", "text prompt for the text-initialised heads", check=class_template)
declare("grad_checkpointing", False, "recompute block activations in backward: less memory, ~1/3 more time")
declare("compile", False, "torch.compile the backbone forward (fused kernels; first steps compile)")

# ---- algorithm (docs/method.md §3, §5) ---------------------------------------------------
declare("algorithm", "finessl", "the training method: finessl, supervised, zeroshot, semikd (a trained run teaches a student: KD True, docs/semikd.md), any of USB's (fixmatch, flexmatch, ...) or acr; the registered names are listed in docs/algorithms.md")
declare("bms", None, "Balanced Margin Softmax on/off; None = on for finessl only", types=(bool,))
declare("dls", None, "Decoupled Label Smoothing (aux head) on/off; None = on for finessl only", types=(bool,))
declare("bms_fixed_alpha", False, "ablation: margin spread fixed to alpha instead of (max-min pace) * alpha")
declare("bms_labeled", True, "BMS margins also on the supervised loss L_x (False: ablation)")
declare("aux_detach", True, "aux head sees detached features (False: ablation, aux losses reach PEFT)")
declare("th", 0.7, "confidence threshold zeta for pseudo-labels", check=threshold)
declare("pace_th", 0.7, "confidence from which a pseudo-label counts towards the learning pace (the released hard-coded 0.7); null = th", types=(float, int), check=threshold)
declare("th_min", 0.0, "aux-confidence floor below which an unlabeled sample gets weight 0", check=threshold)
declare("alpha", 8.0, "scale of the balanced margins", check=non_negative)
declare("bms_form", "released", "margin m(k): 'released' (1-b)/(1+b)*spread or 'paper' (1-b)*spread", choices=("released", "paper"))
declare("w_con", 3.0, "weight gamma of the unlabeled loss L_u", check=non_negative)
declare("smoothing", 0.5, "label smoothing lambda of the aux head's unlabeled targets", check=smoothing)

# ---- optimisation (docs/method.md §4) ----------------------------------------------------
declare("num_epochs", 30, "epochs; the cosine schedule steps once per epoch", check=positive)
declare("total_steps", 500, "optimizer steps per epoch", check=positive)
declare("lr", 0.03, "SGD learning rate", check=non_negative)
declare("momentum", 0.9, "SGD momentum", check=sgd_momentum)
declare("weight_decay", 5e-4, "SGD weight decay", check=non_negative)
declare("seed", None, "random seed; None draws one and records it in the run's config.yaml", types=(int,), check=non_negative_or_null)

# ---- run ----------------------------------------------------------------------------
declare("output_dir", None, "run folder; may hold {seed}, {algorithm} and {config} (the --cfg file's name) fields; None = out/<DATA.NAME>_N<NUM_L>/{algorithm}/seed{seed}", types=(str,))
declare("resume", None, "run folder to continue from its last checkpoint; its config.yaml is the base, and only runtime keys may differ (docs/running.md#resume)", types=(str,))
declare("allow_extend", False, "with resume: num_epochs N above the run's own continues it to N epochs, the cosine schedule recomputed for N from the current epoch on (docs/running.md#resume)")
declare("checkpoint_freq", 0, "also keep a checkpoint every K epochs (0 = only the last)", check=non_negative)
declare("print_freq", 10, "write a progress line to log.txt every K steps", check=positive)
declare("eval_only", False, "evaluate the checkpoint in model_dir and exit")
declare("model_dir", None, "run folder evaluated by eval_only", types=(str,))
declare("gpu", None, "CUDA device index; None = cuda:0 when CUDA exists, else CPU", types=(int,), check=non_negative_or_null)
declare("deterministic", False, "torch deterministic algorithms (slower on CUDA)")
declare("setting", "", "name of this setting in sweeps, summarize.py and reports; '' = the --cfg file's name (else DATA.NAME_N<NUM_L>)")
declare("paper_top1", None, "the paper's top-1 (%) for this setting, shown beside the results by summarize.py and reports (None: the paper has none)", types=(float, int))
def method_figures(value) -> str | None:
    for item in value:
        parts = str(item).split()
        try:
            if len(parts) == 2 and float(parts[1]) == float(parts[1]):
                continue
        except ValueError:
            pass
        return f"{item!r} is not 'METHOD TOP1' (a row name and a number, e.g. 'fixmatch 76.69')"
    return None


declare("reference_top1", [], "published top-1 (%) of methods for this setting, 'METHOD TOP1' each (the long-tailed configs: USB's), shown beside the results by summarize.py", check=method_figures)
declare("plugins", [], "your plug-in modules (module names or .py paths), imported before the rest of the config is read (docs/extending.md)")


# Keys of the authors' code that do nothing here: accepted, reported in one warning.
INERT_KEYS = (
    "dataset", "root", "resolution", "stride", "batch_size", "tau", "downsampling",
    "n_max", "test_ensemble", "vpt_last", "lam_tokens", "patch_size", "mode", "rand_init1",
    "load_epoch", "DATA.NUM_WORKERS",
)

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
    "model_dir", "eval_only", "allow_extend", "setting", "paper_top1", "reference_top1",
)
# ... and what eval_only / predict may also set: where the test data is, how much of it,
# the numeric mode of the forward.
EVAL_RUNTIME_KEYS = RESUME_RUNTIME_KEYS + ("DATA.DATAPATH", "DATA.NUM_TEST", "prec")
INT_RANGE = 2**63  # ints must fit a signed 64-bit integer (torch's seeds and sizes)

CORE_KEYS = tuple(KEYS)  # the keys above; the rest are the plug-ins'


@cross_check
def _evaluation_names_its_run(cfg: CN) -> None:
    if cfg.eval_only and not cfg.model_dir:
        raise UserError("eval_only True needs model_dir DIR (a run folder with a checkpoint)")


@cross_check
def _extension_is_a_resume(cfg: CN) -> None:
    if cfg.allow_extend and not cfg.resume:
        raise UserError("allow_extend True only applies to resume RUN (to continue a run "
                        "past its num_epochs); drop it for a fresh run")


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
    """Every key declared so far (the core's, then the imported plug-ins'): dotted key
    -> (default, comment)."""
    return {key: (spec.default, spec.comment) for key, spec in KEYS.items()}


def model_keys() -> tuple[str, ...]:
    """The keys declared ``shapes_model``: what a SemiKD teacher's config and this run's
    must agree on (the backbone, the strategy switches and sizes, the dataset)."""
    return tuple(key for key, spec in KEYS.items() if spec.shapes_model)


def get_cfg_defaults() -> CN:
    """A fresh copy of the defaults tree: the keys of this file and those the imported
    plug-ins declared (all built-in ones once
    :func:`finessl.config_load.import_builtin_plugins` ran)."""
    return _C.clone()


def all_keys(node: CN, prefix: str = "") -> list[str]:
    """Every leaf key of a config tree, dotted (``DATA.NUM_L``)."""
    keys = []
    for k, v in node.items():
        keys.extend(all_keys(v, f"{prefix}{k}.") if isinstance(v, CN) else [f"{prefix}{k}"])
    return keys
