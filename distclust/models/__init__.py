"""Models: one file per method, found by ``registry``."""
from .base import ClusterModel, ModelParams, Normalizer, Stage
from .registry import get_model_class, model_names

__all__ = ["ClusterModel", "ModelParams", "Normalizer", "Stage", "get_model_class", "model_names"]
