"""Datasets: the registry, the source families, the authors' split and the paper's transforms."""
from . import csv_folder, medmnist, synthetic  # noqa: F401  (register their datasets)
from . import aptos, chexpert, ddsm, isic, pcam  # noqa: F401  (the paper's datasets)
from .cache import cached, default_cache_dir
from .segmentation import SegmentationDataset, create_segmentation_transform  # noqa: F401  (registers ph2, ...)
from .base import DataError, DataMissing, DatasetInfo, ImageDataset
from .registry import (DatasetFacts, create_dataset, data_root, dataset_description, dataset_facts, list_datasets,
                       register_dataset)
from .split import authors_split
from .transforms import create_transform, resize_size

__all__ = ["DatasetFacts", "dataset_facts", "DataError", "DataMissing", "DatasetInfo", "ImageDataset", "create_dataset", "list_datasets", "register_dataset",
           "dataset_description", "data_root", "authors_split", "create_transform", "resize_size",
           "cached", "default_cache_dir"]
