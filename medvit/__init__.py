"""medvit: the executable companion to "Pretrained ViTs Yield Versatile Representations For Medical
Images" (Matsoukas et al., arXiv 2303.07034). The public API, one hop from every figure."""
from .config import SlurmConfig, TrainConfig
from .data import DataError, DatasetInfo, ImageDataset, authors_split, create_dataset, create_transform, list_datasets
from .experiments import execute_run, plan, run_experiment
from .knn import extract_features, knn_classify, knn_evaluate
from .metrics import compute_metrics
from .models import INITS, ModelError, WeightsUnavailableError, create_model, list_models, model_inits
from .params import Params, ParamsError, list_profiles, load_params
from .results import ResultsStore, aggregate
from .runs import Run
from .train import finetune, fit, seed_everything

__version__ = "0.1.0"

__all__ = ["DataError", "DatasetInfo", "ImageDataset", "authors_split", "create_dataset", "create_transform",
           "list_datasets", "Run", "execute_run", "plan", "run_experiment", "extract_features", "knn_classify",
           "knn_evaluate", "compute_metrics", "INITS", "ModelError", "WeightsUnavailableError", "create_model",
           "list_models", "model_inits", "Params", "ParamsError", "list_profiles", "load_params", "ResultsStore",
           "aggregate", "TrainConfig", "SlurmConfig", "finetune", "fit", "seed_everything"]
