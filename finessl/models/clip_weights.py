"""Where the weights of an open_clip pretrained tag are, found before open_clip is asked
for them.

open_clip fetches a tag's file from the Hugging Face Hub (or, for a few tags, from a
URL) on every build, and offline it retries for about a minute before failing in two
lines. Here the cache is looked at first: a cached file is handed to open_clip as a
local file (no network at all); a missing one is fetched only when the host answers
within seconds, and is otherwise one line naming the model, the tag, the cache folder
searched and the remedies that apply.
"""
from __future__ import annotations

import os

from finessl.errors import UserError
from finessl.io import unreachable

HF_WEIGHTS = "open_clip_pytorch_model.bin"  # open_clip's file name when a tag gives none
HF_SAFE_WEIGHTS = "open_clip_model.safetensors"
HF_URL = "https://huggingface.co"


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_cache(cache_dir: str) -> str:
    if cache_dir:
        return cache_dir
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _hub_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """(repo id, file names open_clip would try, in its order) of a tag's ``hf_hub``."""
    repo_id, filename = os.path.split(hf_hub)  # 'org/model/' names no file: the default
    filename = filename or HF_WEIGHTS
    names = [HF_SAFE_WEIGHTS] if filename == HF_WEIGHTS else []
    if filename != HF_WEIGHTS and filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return repo_id, names + [filename]


def locate(name: str, tag: str, cache_dir: str = "") -> tuple[str | None, str]:
    """(the cached weights file of open_clip tag ``tag`` for model ``name`` or None,
    the cache folder searched)."""
    import open_clip  # with the model, not the config

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("file"):
        return cfg["file"], os.path.dirname(cfg["file"])
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        cache = _hf_cache(cache_dir)
        repo_id, names = _hub_candidates(cfg["hf_hub"])
        for filename in names:
            path = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
            if isinstance(path, str) and os.path.isfile(path):
                return path, cache
        return None, cache
    cache = cache_dir or os.path.expanduser("~/.cache/clip")
    path = os.path.join(cache, os.path.basename(cfg.get("url", "")))
    return (path if cfg.get("url") and os.path.isfile(path) else None), cache


def _source_url(name: str, tag: str) -> str:
    import open_clip  # with the model, not the config

    cfg = open_clip.get_pretrained_cfg(name, tag)
    return HF_URL if cfg.get("hf_hub") else cfg.get("url", HF_URL)


def require(name: str, tag: str, cache_dir: str = "") -> str | None:
    """The cached file of the tag's weights; None when it is not cached but can be
    downloaded now; a one-line :class:`UserError` when it can be neither."""
    path, cache = locate(name, tag, cache_dir)
    if path:
        return path
    where = f"CLIP weights {name} pretrained {tag!r} are not in the cache {cache}"
    local = "or pass 'pretrained /path/to/weights.pt' (a file you have)"
    if _hf_offline() and _source_url(name, tag) == HF_URL:
        raise UserError(f"{where} and HF_HUB_OFFLINE=1 is set: unset it on a machine with "
                        f"internet to download them once into that folder, {local}")
    why = unreachable(_source_url(name, tag))
    if why:
        raise UserError(f"{where} and {why}: run once where it can be reached (the file is "
                        f"kept in that folder; cache_dir chooses another), {local}")
    return None
