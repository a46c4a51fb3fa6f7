"""CLIP models by name, with their weights: the authors' names (``ViT-B/16``, built with
the QuickGELU OpenAI trained, docs/method.md §1), open_clip names and model-config
JSONs, and weights from an open_clip tag (the Hugging Face cache first:
:mod:`finessl.models.clip_weights`), a local file in open_clip's or OpenAI's own
format, or none. Every way this fails is one line naming what is missing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
import zipfile

import torch
import torch.nn as nn

from finessl.errors import UserError, one_line
from finessl.models import clip_weights

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's own input normalisation
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
OPENAI_INT_KEYS = ("input_resolution", "context_length", "vocab_size")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
# The backbone names of OpenAI's CLIP release, mapped to open_clip's QuickGELU
# architectures (OpenAI trained with QuickGELU, docs/method.md §1).
BACKBONE_ALIASES = {"ViT-B/16": "ViT-B-16-quickgelu", "ViT-B/32": "ViT-B-32-quickgelu",
                    "ViT-L/14": "ViT-L-14-quickgelu", "ViT-L/14@336px": "ViT-L-14-336-quickgelu"}


# Architectures FineSSL ships as data (open_clip model configs): ViT-Tiny-4, the tiny ViT
# of the offline demo (configs/demo/vit_tiny.yaml).
MODEL_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")
_configs_added = False


def open_clip_lib():
    """open_clip, with FineSSL's model configs registered: imported on first use (a
    model looked up or built), so reading a config never waits for it."""
    global _configs_added
    import open_clip

    if not _configs_added:
        open_clip.add_model_config(MODEL_CONFIGS)
        _configs_added = True
    return open_clip


def resolve_model_name(backbone: str) -> str:
    """The open_clip name for ``backbone``.

    Accepts the authors' spelling (``ViT-B/16``, mapped to the QuickGELU architecture
    OpenAI trained, docs/method.md §1), any open_clip model name, or the path of an
    open_clip model-config JSON (registered on the fly, so custom architectures are
    data, not code).
    """
    open_clip = open_clip_lib()
    if backbone.endswith(".json"):
        if not os.path.isfile(backbone):
            raise UserError(f"backbone: model config file not found: {backbone}")
        open_clip.add_model_config(backbone)
        return os.path.splitext(os.path.basename(backbone))[0]
    name = BACKBONE_ALIASES.get(backbone, backbone)
    if name not in open_clip.list_models():
        import difflib
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UserError(f"backbone: unknown open_clip model '{backbone}'{hint}")
    return name


def pretrained_source(name: str, pretrained: str) -> str | None:
    if pretrained.lower() in ("", "none"):
        return None
    looks_like_file = pretrained.endswith(_WEIGHT_SUFFIXES) or os.sep in pretrained
    if looks_like_file:
        if not os.path.isfile(pretrained):
            raise UserError(f"pretrained: weights file not found: {pretrained}")
        return pretrained
    tags = open_clip_lib().list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise UserError(f"pretrained: '{pretrained}' is not an open_clip tag for {name} "
                        f"(tags: {', '.join(tags) or 'none'}); or give a local weights file")
    return pretrained


def read_openai_weights(path: str) -> dict | None:
    """The state dict of a weights file in OpenAI's own format, or None for any other.

    OpenAI released TorchScript archives, whose state dict carries three ints
    (:data:`OPENAI_INT_KEYS`) beside the weights, as does a state dict saved from
    OpenAI's model. open_clip's file loader refuses both (``torch.load`` with
    ``weights_only`` rejects archives, its strict load the ints), so they are read here.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            is_jit = any(os.path.basename(n) == "constants.pkl" for n in archive.namelist())
        if is_jit:
            with warnings.catch_warnings():  # torch's deprecation notice: nothing to act on
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(path, map_location="cpu").state_dict()
            return {k: v for k, v in state.items() if k not in OPENAI_INT_KEYS}
    try:  # mmap: looking at the keys reads no weights
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # safetensors, legacy format, ...: left to open_clip's loader
        return None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(k in state for k in OPENAI_INT_KEYS):
        return None
    return {k.removeprefix("module."): v for k, v in state.items() if k not in OPENAI_INT_KEYS}


class _NoWeightsNotice(logging.Filter):
    """open_clip's "No pretrained weights loaded" warning, dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded for model")


@contextlib.contextmanager
def _expected_random_init():
    """While open_clip builds a model FineSSL asked to build without weights
    (``pretrained none``, or OpenAI-format weights that :func:`load_clip` loads itself
    right after), its warning that no weights were loaded says nothing wrong: silence
    exactly that one (open_clip logs it through the root logger). Anywhere else it stays."""
    root, notice = logging.getLogger(), _NoWeightsNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def load_clip(backbone: str, pretrained: str, cache_dir: str = "",
              precision: str = "fp32") -> nn.Module:
    """Build the open_clip CLIP model with its weights, failing in one clear line.

    Weights come from an open_clip tag (Hugging Face cache; ``HF_HUB_OFFLINE=1``
    uses a warm cache without network), a local checkpoint file (open_clip's or
    OpenAI's format), or nowhere (``pretrained none``: random init, for tests and
    benchmarks). OpenAI's weights (the ``openai`` tag, any tag whose config says
    QuickGELU, an OpenAI-format file) always get QuickGELU, the activation they were
    trained with (docs/method.md §1): a GELU architecture such as ``ViT-B-16`` is
    built with QuickGELU instead, and the log says so. ``precision`` is open_clip's:
    ``fp16`` gives fp16 linear and conv weights, with fp32 LayerNorms and embeddings.
    """
    open_clip = open_clip_lib()
    name = resolve_model_name(backbone)
    source = pretrained_source(name, pretrained)
    is_file = source is not None and os.path.isfile(source)
    tag = source if source is not None and not is_file else None
    if tag is not None:  # a cached tag loads as a local file: no network at all
        cached = clip_weights.require(name, tag, cache_dir)
        if cached is not None:
            source, is_file = cached, True
    try:
        openai_state = read_openai_weights(source) if is_file else None
        quick_gelu = openai_state is not None or (tag is not None and bool(
            open_clip.get_pretrained_cfg(name, tag).get("quick_gelu")))
        if quick_gelu and not open_clip.get_model_config(name).get("quick_gelu"):
            log.info("%s: OpenAI weights, trained with QuickGELU: building %s with QuickGELU "
                     "instead of GELU", tag or source, name)
        weights = None if openai_state is not None else source
        with _expected_random_init() if weights is None else contextlib.nullcontext():
            model = open_clip.create_model(name, pretrained=weights, precision=precision,
                                           force_quick_gelu=quick_gelu,
                                           cache_dir=cache_dir or None)
        if openai_state is not None:
            model.load_state_dict(openai_state)
    except UserError:
        raise
    except Exception as e:  # a download cut off, a corrupt file: all user-fixable
        what = f"CLIP weights {name} pretrained {tag!r}" if tag else f"pretrained {source or name}"
        raise UserError(f"{what}: cannot load ({one_line(e)})") from None
    return model
