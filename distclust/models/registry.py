"""Model name → class. Every module in ``distclust/models`` that defines a
``ClusterModel`` subclass with a ``name`` is found automatically: a new model is
one new file, no list to edit."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

from ..errors import SpecError, did_you_mean
from .base import ClusterModel

_SKIP = {"base", "registry", "networks"}
_REGISTRY: dict[str, type[ClusterModel]] = {}


def _discover() -> dict[str, type[ClusterModel]]:
    if not _REGISTRY:
        from .. import models as pkg

        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name in _SKIP or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, ClusterModel) and obj.name and obj.__module__ == module.__name__:
                    if obj.name in _REGISTRY and _REGISTRY[obj.name] is not obj:
                        raise RuntimeError(f"two models are named '{obj.name}'")
                    _REGISTRY[obj.name] = obj
    return _REGISTRY


def model_names() -> list[str]:
    return sorted(_discover())


def get_model_class(name: str) -> type[ClusterModel]:
    models = _discover()
    if name not in models:
        raise SpecError(f"unknown model '{name}'.{did_you_mean(name, models)}", "model.name",
                        f"use one of: {', '.join(sorted(models))}")
    return models[name]
