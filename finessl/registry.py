"""Plug-ins by name: datasets, PEFT methods, backbone families and algorithms.

Each kind of plug-in has one :class:`Registry`. A plug-in is one file that registers
itself with a decorator (``@ALGORITHMS.register("mymatch")``) and declares its own
config keys beside its code (:func:`finessl.config.declare`); its package imports every
module in it (:func:`import_package_modules`), so nothing else needs an edit. Modules
outside the package (your own plug-ins) are loaded by the ``plugins`` config key.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import pkgutil
import sys
from typing import Callable, Iterator

from finessl.errors import UserError


def _same(name: str) -> str:
    return name


# Config key -> the registry its value must name (``algorithm`` -> the algorithms):
# filled as registries are made, read by the config's validation.
CONFIG_REGISTRIES: dict[str, "Registry"] = {}


class Registry:
    """Named plug-ins of one ``kind``, chosen by the config key ``key``.

    ``normalize`` maps a user's spelling to the registered name (``cifar-10`` ->
    ``cifar10``); a lookup of an unknown name is a :class:`UserError` that names the
    key, the value and the choices.
    """

    def __init__(self, kind: str, key: str, normalize: Callable[[str], str] = _same,
                 config_key: bool = True):
        self.kind, self.key, self.normalize = kind, key, normalize
        self._items: dict[str, object] = {}
        if config_key:  # the config checks the key's value against this registry
            CONFIG_REGISTRIES[key] = self

    def register(self, name: str, *aliases: str, **attributes):
        """Decorator: register ``obj`` as ``name`` (and ``aliases``); sets ``obj.name``
        and the class ``attributes`` given (``@register("fixmatch", order=30)``)."""
        def wrap(obj):
            for spelling in (name, *aliases):
                key = self.normalize(spelling)
                if key in self._items and self._items[key] is not obj:
                    raise ValueError(f"{self.kind} {spelling!r} is registered twice")
                self._items[key] = obj
            obj.name = name
            for attribute, value in attributes.items():
                setattr(obj, attribute, value)
            return obj
        return wrap

    def get(self, name: str):
        key = self.normalize(str(name))
        if key not in self._items:
            close = difflib.get_close_matches(key, list(self._items), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{self.key}: {name!r} is not one of {', '.join(self.names())} "
                            f"(a {self.kind}){hint}")
        return self._items[key]

    def names(self) -> list[str]:
        """Registered names, aliases left out, sorted."""
        return sorted({obj.name for obj in self._items.values()})

    def items(self) -> list[tuple[str, object]]:
        """(name, plug-in) pairs, aliases left out, sorted by name."""
        return [(name, self.get(name)) for name in self.names()]

    __getitem__ = get

    def __contains__(self, name: str) -> bool:
        return self.normalize(str(name)) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def import_package_modules(package: str, path) -> None:
    """Import every module of ``package`` (its ``__path__``): how a package of
    plug-ins finds its files without a list to keep up to date."""
    for module in pkgutil.iter_modules(path):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")


def import_plugin(spec: str) -> None:
    """Import a user's plug-in: a module name (``mypkg.mymatch``, on ``sys.path``) or
    the path of a ``.py`` file. Importing registers what it defines."""
    if spec.endswith(".py"):
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise UserError(f"plugins: no file {spec}")
        name = f"finessl_plugin_{os.path.splitext(os.path.basename(path))[0]}"
        if name in sys.modules and getattr(sys.modules[name], "__file__", None) == path:
            return
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name and spec.startswith(e.name):
            raise UserError(f"plugins: cannot import {spec!r} (not on sys.path; give the "
                            f"module's .py path instead)") from None
        raise
