"""Backbones (paper names × inits) behind one interface; segmentation models live in ``segmentation``."""
from .backbones import (BACKBONES, INITS, Backbone, BackboneSpec, ModelError, WeightsUnavailableError,
                        create_model, indomain_start, list_models, model_inits)

__all__ = ["BACKBONES", "INITS", "Backbone", "BackboneSpec", "ModelError", "WeightsUnavailableError",
           "create_model", "indomain_start", "list_models", "model_inits"]
