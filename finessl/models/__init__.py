"""Backbone, fine-tuning strategies (PEFT methods) and heads.

Every module of this package is imported here, so a strategy in a new
``peft_<name>.py`` registers itself (``@peft_method``) with no other edit.
"""
from finessl.models.model import FineSSLModel, build_model
from finessl.registry import import_package_modules

import_package_modules(__name__, __path__)

__all__ = ["FineSSLModel", "build_model"]
