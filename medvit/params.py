"""Experiment parameters: one frozen dataclass, loaded from ``params/<profile>.yaml`` by one function.

Profiles hold plain values. ``load_params("quick", epochs=3)`` reads the profile, applies overrides
(``None`` means "the profile's value", so a notebook's unset parameters never shadow the profile),
and rejects unknown keys or wrongly typed values with a message naming the key and the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PARAMS_DIR_ENV = "MEDVIT_PARAMS_DIR"


class ParamsError(ValueError):
    """A profile or override that does not fit :class:`Params`."""


@dataclass(frozen=True)
class Params:
    profile: str
    description: str = ""
    data_root: str | None = None  # None: $MEDVIT_DATA_ROOT, else each source's own download
    results_dir: str = "results"  # rows go to <results_dir>/<profile>/
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    seed: int = 0  # repetition r uses seed + r
    repetitions: int = 5
    datasets: tuple[str, ...] = ()
    dataset_options: dict = field(default_factory=dict)  # per dataset: create_dataset(**options)
    img_size: int = 224
    train_subset: int = 0  # >0: a fixed seeded subset of this many training images (CPU budgets); 0: all
    # fine-tuning (paper-spec §3)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_iters: int = 500
    warmup_max_fraction: float = 1.0
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    num_workers: int = 0
    compile: bool = False
    checkpoint_repetitions: int = 1  # keep fine-tuned checkpoints of the first N repetitions (Figs 4, 5)
    # k-NN (paper-spec §4)
    knn_k: int = 200
    knn_temperature: float = 0.1
    # Fig 1: backbones × inits; Fig 3: capacity sweep
    fig1_models: tuple[str, ...] = ("resnet50", "deit_small")
    fig1_inits: tuple[str, ...] = ("random", "imagenet", "dino")
    fig3_models: tuple[str, ...] = ("resnet18", "resnet50", "resnet152", "deit_tiny", "deit_small", "deit_base")
    fig3_inits: tuple[str, ...] = ("imagenet",)  # the paper's sweep uses ImageNet weights
    fig3_datasets: tuple[str, ...] = ()  # empty: the profile's datasets
    # Fig 2: DeepLabV3 segmentation (paper-spec §6)
    seg_datasets: tuple[str, ...] = ()
    seg_models: tuple[str, ...] = ("resnet50", "deit_small")
    seg_inits: tuple[str, ...] = ("random", "imagenet", "dino")
    seg_img_size: int = 224
    seg_epochs: int = 50
    seg_batch_size: int = 16
    # Figs 4 and 5: saliency and mean attention distance (paper-spec §6)
    saliency_datasets: tuple[str, ...] = ()
    saliency_images: int = 4  # test images per dataset in the Fig 4 grid
    attention_images: int = 512  # test images averaged per point in Fig 5

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def hash(self) -> str:
        """A short hash of every value but the description: rows with equal hashes ran the same settings."""
        d = {k: v for k, v in self.to_dict().items() if k != "description"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def run_settings(self) -> dict:
        """The values that change a run's result (not which runs a figure asks for, nor where rows go)."""
        d = self.to_dict()
        return {k: d[k] for k in RUN_SETTINGS}

    def seed_for(self, repetition: int) -> int:
        return self.seed + repetition

    def options_for(self, dataset: str) -> dict:
        return dict(self.dataset_options.get(dataset, {}))


RUN_SETTINGS = ("seed", "dataset_options", "img_size", "train_subset", "epochs", "batch_size", "lr", "weight_decay",
                "warmup_iters", "warmup_max_fraction", "min_lr", "grad_clip", "knn_k", "knn_temperature",
                "seg_img_size", "seg_epochs", "seg_batch_size", "attention_images")


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def params_dir() -> Path:
    """``$MEDVIT_PARAMS_DIR``, else the repository's ``params/`` beside the package."""
    env = os.environ.get(PARAMS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "params"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in params_dir().glob("*.yaml"))


def _coerce(name: str, value, source: str):
    """``value`` as the type of field ``name``, or ParamsError naming the key, the value and the source."""
    hint = typing.get_type_hints(Params)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        origin = typing.get_origin(t) or t
        if origin is tuple and isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
            return tuple(value)
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, dict) and isinstance(value, origin):
            return value
    raise ParamsError(f"{source}: {name}={value!r} should be {hint}")


def load_params(profile: str | os.PathLike, **overrides) -> Params:
    """The resolved :class:`Params` of a profile name (``params/<name>.yaml``) or YAML path, with overrides."""
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = params_dir() / f"{profile}.yaml"
        if not path.is_file():
            raise ParamsError(f"unknown profile {str(profile)!r}: no {path}; profiles: {', '.join(list_profiles())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ParamsError(f"cannot read profile {path}: {err}") from None
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter: value, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(Params)}
    values.setdefault("profile", path.stem)
    resolved = {}
    for source, items in ((str(path), values), ("override", {k: v for k, v in overrides.items() if v is not None})):
        for key, value in items.items():
            if key not in names:
                raise ParamsError(f"{source}: unknown parameter {key!r}; known: {', '.join(sorted(names))}")
            resolved[key] = _coerce(key, value, source)
    return Params(**resolved)
