"""Backbone, PEFT modules and heads."""
from finessl.models.model import FineSSLModel, build_model

__all__ = ["FineSSLModel", "build_model"]
