"""medvit: the executable companion to "Pretrained ViTs Yield Versatile Representations For Medical
Images" (Matsoukas et al., arXiv 2303.07034). The public API, one hop from every figure.

The names below are imported on first use (PEP 562), so ``import medvit`` and ``medvit --help`` do not
load torch; the first public name used imports every module, which registers the experiments and figures.
"""
from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

# public name -> the module that defines it (relative to medvit)
_EXPORTS = {
    **dict.fromkeys(["DataError", "DatasetInfo", "ImageDataset", "authors_split", "create_dataset",
                     "create_transform", "list_datasets"], ".data"),
    **dict.fromkeys(["Run", "execute_run", "plan", "run_experiment"], ".experiments"),
    **dict.fromkeys(["extract_features", "knn_classify", "knn_evaluate"], ".knn"),
    "compute_metrics": ".metrics",
    **dict.fromkeys(["INITS", "ModelError", "WeightsUnavailableError", "create_model", "list_models",
                     "model_inits"], ".models"),
    **dict.fromkeys(["Params", "ParamsError", "list_profiles", "load_params"], ".params"),
    **dict.fromkeys(["ResultsStore", "aggregate"], ".results"),
    **dict.fromkeys(["create_segmentation_model", "evaluate_segmentation", "segmentation_examples",
                     "train_segmentation"], ".segment"),
    **dict.fromkeys(["FinetuneConfig", "finetune", "seed_everything"], ".train"),
}
# Figs 2, 4, 5: these modules register experiments 'segmentation', 'attention', 'attention_finetuned' and
# figures 'fig2', 'fig5' when imported (medvit.saliency.saliency_maps, medvit.attention.mean_attention_distance).
_REGISTERING = (".experiments", ".segment", ".attention", ".saliency")

__all__ = ["DataError", "DatasetInfo", "ImageDataset", "authors_split", "create_dataset", "create_transform",
           "list_datasets", "Run", "execute_run", "plan", "run_experiment", "extract_features", "knn_classify",
           "knn_evaluate", "compute_metrics", "INITS", "ModelError", "WeightsUnavailableError", "create_model",
           "list_models", "model_inits", "Params", "ParamsError", "list_profiles", "load_params", "ResultsStore",
           "aggregate", "FinetuneConfig", "finetune", "seed_everything"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: medvit.attention, ...
            load_all()
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'medvit' has no attribute {name!r}")
    load_all()
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def load_all() -> None:
    """Import the modules that register experiments and figures (what the first public name used does)."""
    for module in _REGISTERING:
        importlib.import_module(module, __name__)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
