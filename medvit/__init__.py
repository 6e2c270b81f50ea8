"""medvit: the executable companion to "Pretrained ViTs Yield Versatile Representations For Medical
Images" (Matsoukas et al., arXiv 2303.07034). The public API, one hop from every figure.

The names below are imported on first use (PEP 562), so ``import medvit`` and ``medvit --help`` do not
load torch. Submodules (``medvit.figures``, ``medvit.saliency``, ...) import as usual.
"""
from __future__ import annotations

import importlib

from .resources import VERSION as __version__  # noqa: F401  (medvit.__version__)

# public name -> the module that defines it (relative to medvit)
_EXPORTS = {
    **dict.fromkeys(["TrainConfig", "SlurmConfig"], ".config"),
    **dict.fromkeys(["DataError", "DataMissing", "DatasetInfo", "ImageDataset", "authors_split", "create_dataset",
                     "create_transform", "list_datasets"], ".data"),
    **dict.fromkeys(["execute_run", "figure_rows", "run_grid"], ".execution"),
    **dict.fromkeys(["extract_features", "knn_classify", "knn_evaluate"], ".knn"),
    "compute_metrics": ".metrics",
    **dict.fromkeys(["INITS", "ModelError", "WeightsUnavailableError", "create_model", "list_models",
                     "model_inits"], ".models"),
    **dict.fromkeys(["Params", "ParamsError", "list_profiles", "load_params"], ".params"),
    **dict.fromkeys(["ResultsStore", "aggregate"], ".results"),
    "Run": ".runs",
    **dict.fromkeys(["finetune", "fit", "seed_everything"], ".train"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medvit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
