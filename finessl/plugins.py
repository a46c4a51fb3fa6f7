"""Every built-in plug-in, loaded: datasets, backbones, fine-tuning strategies and
algorithms register themselves and declare their config keys when their packages are
imported, which this module does. Programs load configs through :func:`load_config`
here, so the tree is complete and the plug-in names a config asks for are checked.
"""
from __future__ import annotations

import finessl.algorithms
import finessl.data
import finessl.models
from finessl import config_load

__all__ = ["load_config"]

_BUILTIN = (finessl.algorithms, finessl.data, finessl.models)  # imported above: registered


def load_config(cfg_file: str | None = None, opts: list[str] | None = None):
    """:func:`finessl.config_load.load_config` with every built-in plug-in registered, so
    their keys are in the tree and the names a config asks for are checked."""
    return config_load.load_config(cfg_file, opts)
