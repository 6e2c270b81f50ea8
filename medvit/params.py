"""Experiment parameters: one frozen dataclass, loaded from ``params/<profile>.yaml`` by one function.

Profiles hold plain values. ``load_params("quick", train={"epochs": 3})`` reads the profile, applies
overrides (``None`` means "the profile's value", so a notebook's unset parameters never shadow the
profile; a nested mapping overrides only the keys it names), and rejects unknown keys, wrongly typed
values, values outside their range and unknown dataset / model / init names with a message naming the key,
the value and the file. A profile is refused when it loads, never halfway through a run, if it is empty, not
UTF-8, not YAML, gives a key twice (PyYAML would keep the second silently), holds a non-finite number, or
gives ``dataset_options`` a dataset's factory does not take or of a type it does not take.
The training loop's settings are nested (``train``, ``seg_train``: :class:`medvit.config.TrainConfig`), as
are in-domain DINO's (``dino``: :class:`medvit.config.DinoConfig`, whose ``img_size`` always equals the
profile's) and a Slurm job's resources (``slurm``).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import io
import json
import math
import numbers
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import RANGES, DinoConfig, SlurmConfig, TrainConfig
from .data import list_datasets
from .data.registry import dataset_signature
from .models import INITS, indomain_start, list_models

from .resources import PARAMS_DIR_ENV, params_dir  # noqa: F401  (where the profiles are)


class ParamsError(ValueError):
    """A profile or override that does not fit :class:`Params`."""


class _ProfileLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping, at any depth: PyYAML would keep the
    second silently, so a second ``train: {lr: 0.001}`` would drop the first ``train:``'s epochs."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' merges on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):  # YAML's own construct_mapping says "found unhashable key"
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ParamsError(f"{self.name}: duplicate key {key!r} on lines {seen[key]} and {line}; give each key "
                                  f"once (a second one would replace the first)")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _read_profile(path: Path) -> dict:
    """The profile's top-level mapping, or one ParamsError naming the file (unreadable, not UTF-8, not YAML,
    a duplicate key, empty, or not a mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ParamsError(f"cannot read profile {path}: it is not UTF-8 text ({err}); save it as UTF-8") from None
    except OSError as err:
        raise ParamsError(f"cannot read profile {path}: {err}") from None
    stream = io.StringIO(text)
    stream.name = str(path)  # YAML's own messages (and the duplicate-key one) then say "in <path>, line N"
    try:
        values = yaml.load(stream, Loader=_ProfileLoader)
    except yaml.YAMLError as err:
        raise ParamsError(f"cannot read profile {path}: {err}") from None
    if values is None:
        raise ParamsError(f"{path}: the profile is empty; expected a mapping of parameter: value "
                          f"(at least 'description: ...')")
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter: value, got {type(values).__name__}")
    return values


@dataclass(frozen=True)
class Params:
    profile: str
    description: str = ""
    data_root: str | None = None  # None: $MEDVIT_DATA_ROOT, else each source's own download
    results_dir: str = "results"  # rows go to <results_dir>/<profile>/
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (auto: bf16 where supported, else fp16 + scaler; fp32 on CPU)
    compile: bool = False  # torch.compile the model in the training loop
    num_workers: int = 0
    cpu_runs: int = 1  # runs done at once on a CPU, each in its own process with cores / cpu_runs threads
    seed: int = 0  # repetition r uses seed + r
    repetitions: int = 5
    datasets: tuple[str, ...] = ()
    dataset_options: dict = field(default_factory=dict)  # per dataset: create_dataset(**options)
    img_size: int = 224
    train_subset: int = 0  # >0: a fixed seeded subset of this many training images (CPU budgets); 0: all
    train: TrainConfig = TrainConfig()  # classification fine-tuning (docs/protocol.md §4–§5)
    checkpoint_repetitions: int = 1  # keep fine-tuned checkpoints of the first N repetitions (Figs 4, 5)
    # k-NN (docs/protocol.md §6)
    knn_k: int = 200
    knn_temperature: float = 0.1
    # Fig 1: backbones × inits (Figs 4 and 5 show the same ones)
    fig1_models: tuple[str, ...] = ("resnet50", "deit_small")
    fig1_inits: tuple[str, ...] = ("random", "imagenet", "dino")
    # In-domain DINO (the "<start>+dino_indomain" inits, docs/protocol.md §7): one pretraining per dataset ×
    # backbone × start init, for these datasets and backbones only; its global crop is img_size.
    dino: DinoConfig = DinoConfig()
    dino_datasets: tuple[str, ...] = ()
    dino_models: tuple[str, ...] = ("resnet50", "deit_small")
    # DeepLabV3 segmentation (docs/protocol.md §9)
    seg_img_size: int = 224
    seg_train: TrainConfig = TrainConfig(epochs=50, batch_size=16)
    # Figs 4 and 5: saliency and mean attention distance (docs/protocol.md §10, §11)
    saliency_datasets: tuple[str, ...] = ()
    attention_images: int = 512  # test images averaged per point in Fig 5
    # launchers
    slurm: SlurmConfig = SlurmConfig()
    # Each figure's own section, {figure: {setting: value}}: what only that figure reads (which runs it shows,
    # how it draws), checked by the figure's Settings (``figure_settings``); absent keys take its defaults.
    figures: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def hash(self) -> str:
        """A short hash of every value but the description: rows with equal hashes ran the same settings."""
        return digest({k: v for k, v in self.to_dict().items() if k != "description"})

    def settings(self, keys) -> dict:
        """The values of ``keys`` (field names) as plain data, e.g. the settings one experiment reads."""
        d = self.to_dict()
        return {k: d[k] for k in keys}

    def seed_for(self, repetition: int) -> int:
        return self.seed + repetition

    def options_for(self, dataset: str) -> dict:
        return dict(self.dataset_options.get(dataset, {}))


def digest(values: dict) -> str:
    """A short hash of plain ``values`` (sorted JSON): equal values, equal digests."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def _plain(v):
    if isinstance(v, tuple):
        return list(v)
    if dataclasses.is_dataclass(v):
        return dataclasses.asdict(v)
    return v


def resolve_profile(profile: str | os.PathLike) -> str:
    """A profile name as it is; a YAML file's path made absolute against the current directory (the kernel
    reads it, and papermill's kernel may start elsewhere)."""
    path = Path(profile)
    return str(path.expanduser().resolve()) if path.suffix in (".yaml", ".yml") else str(profile)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in params_dir().glob("*.yaml"))


def _coerce(cls, name: str, value, source: str, prefix: str = ""):
    """``value`` as the type of ``cls``' field ``name``, or ParamsError naming the key, the value and the source
    (``prefix``: the dotted path of ``cls`` in Params, e.g. ``train.``)."""
    hint = typing.get_type_hints(cls)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        origin = typing.get_origin(t) or t
        if dataclasses.is_dataclass(origin):
            if isinstance(value, origin):
                return value
            if isinstance(value, dict):
                return value  # merged and checked field by field in _nested
        if origin is tuple and isinstance(value, (list, tuple)):
            if typing.get_args(t)[:1] == (str,) and all(isinstance(x, str) for x in value):
                return tuple(value)
            if typing.get_args(t)[:1] == (float,) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           for x in value):
                return tuple(float(x) for x in value)
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if not math.isfinite(number):
                    raise ParamsError(f"{source}: {prefix}{name}={value!r} is not a finite number")
                return number
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, dict) and isinstance(value, origin):
            return value
    raise ParamsError(f"{source}: {prefix}{name}={value!r} should be {_type_name(hint)}")


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_range(name: str, value, source: str) -> None:
    if name in RANGES and value is not None:
        ok, allowed = RANGES[name]
        if not ok(value):
            raise ParamsError(f"{source}: {name}={value!r} is out of range; expected {allowed}")


def _nested(cls, base, values: dict, source: str, prefix: str):
    """``base`` (a config dataclass) with ``values`` applied key by key, each coerced and range-checked."""
    names = {f.name for f in dataclasses.fields(cls)}
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise ParamsError(f"{source}: unknown parameter {prefix + key!r}{did_you_mean(key, names)}; "
                              f"known in {prefix.rstrip('.')}: {', '.join(sorted(names))}")
        value = _coerce(cls, key, value, source, prefix)
        _check_range(key, value, source if not prefix else f"{source}: {prefix.rstrip('.')}")
        changes[key] = value
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as err:  # the config's own checks (DinoConfig.__post_init__)
        raise ParamsError(f"{source}: {prefix.rstrip('.')}: {err}") from None


def _refuse_non_finite(value, source: str, name: str) -> None:
    """ParamsError naming the dotted field if ``value`` holds inf or nan at any depth (``train.lr: .inf``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise ParamsError(f"{source}: {name}={value!r} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(item, source, f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_non_finite(item, source, f"{name}[{i}]")


def _dataset_options(options: dict, source: str) -> dict:
    """``options`` checked as ``{dataset: {option: value}}``: every dataset registered, every option one its
    factory takes (``create_dataset(name, split, **options)``), of the type the factory declares. A string
    where a float is declared is read as a float, as for Params' own floats (YAML 1.1 reads 1e-4 as a string)."""
    known = list_datasets()
    checked = {}
    for dataset, given in options.items():
        if dataset not in known:
            raise ParamsError(f"{source}: dataset_options names unknown dataset {dataset!r}"
                              f"{did_you_mean(str(dataset), known)}")
        if not isinstance(given, dict):
            raise ParamsError(f"{source}: dataset_options.{dataset}={given!r} should be a mapping of option: value "
                              f"(e.g. {{size: 28}})")
        hints = _dataset_option_hints(dataset)
        checked[dataset] = {}
        for option, value in given.items():
            field_name = f"dataset_options.{dataset}.{option}"
            if hints is not None and option not in hints:
                takes = ", ".join(sorted(hints)) or "no options"
                raise ParamsError(f"{source}: unknown option {field_name!r}{did_you_mean(str(option), hints)}; "
                                  f"{dataset} takes: {takes}")
            hint = hints.get(option, inspect.Parameter.empty) if hints is not None else inspect.Parameter.empty
            if hint is float and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    pass
                else:
                    _refuse_non_finite(value, source, field_name)
            if not _fits(hint, value):
                raise ParamsError(f"{source}: {field_name}={value!r} should be {_type_name(hint)}")
            checked[dataset][option] = value
    return checked


def _dataset_option_hints(dataset: str) -> dict | None:
    """The options ``dataset``'s factory takes besides the split, each with its declared type (``Parameter.empty``
    where none is declared); None if it takes any keyword (``**options``)."""
    parameters = dataset_signature(dataset).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {name: p.annotation for name, p in parameters.items()
            if name != "split" and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _fits(hint, value) -> bool:
    """Whether ``value`` is of the declared type ``hint``; True for a type this check does not know (the factory
    checks those itself) and where none is declared."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool or hint is str:
        return isinstance(value, hint)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (Sequence, list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not args or all(_fits(args[0], v) for v in value))
    return True


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_params(profile: str | os.PathLike, **overrides) -> Params:
    """The resolved :class:`Params` of a profile name (``params/<name>.yaml``) or YAML path, with overrides."""
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = params_dir() / f"{profile}.yaml"
        if not path.is_file():
            raise ParamsError(f"unknown profile {str(profile)!r}{did_you_mean(str(profile), list_profiles())}: "
                              f"no {path}; profiles: {', '.join(list_profiles())}")
    values = _read_profile(path)
    fields = {f.name: f for f in dataclasses.fields(Params)}
    values.setdefault("profile", path.stem)
    resolved: dict = {}
    for source, items in ((str(path), values), ("override", {k: v for k, v in overrides.items() if v is not None})):
        for key, value in items.items():
            if key not in fields:
                raise ParamsError(f"{source}: unknown parameter {key!r}{did_you_mean(key, fields)}; "
                                  f"known: {', '.join(sorted(fields))}")
            _refuse_non_finite(value, source, key)
            value = _coerce(Params, key, value, source)
            if key == "dataset_options":
                value = _dataset_options(value, source)
            if key == "figures":
                value = _figure_sections(resolved.get("figures", {}), value, source)
            if key == "dino" and isinstance(value, dict) and "img_size" in value:
                raise ParamsError(f"{source}: dino.img_size is not a setting: DINO's global crop is the profile's "
                                  f"img_size")
            if isinstance(value, dict) and dataclasses.is_dataclass(fields[key].default):
                cls = type(fields[key].default)
                value = _nested(cls, resolved.get(key, fields[key].default), value, source, f"{key}.")
            _check_range(key, value, source)
            resolved[key] = value
    resolved["dino"] = dataclasses.replace(resolved.get("dino", DinoConfig()),
                                           img_size=resolved.get("img_size", Params.img_size))
    params = Params(**resolved)
    _check_names(params, params.dino_datasets, lambda k: "override" if overrides.get(k) is not None else str(path))
    return params


def _check_names(values, dino_datasets, source_of, prefix: str = "") -> None:
    """Every dataset, model and init that ``values`` (Params, or a figure's Settings) names in its fields
    ``datasets``, ``models``, ``inits`` (or ending so) exists (the error suggests the closest name), and an
    in-domain init has ``dino_datasets`` to pretrain on. ``source_of(field)``: where the field's value came
    from; ``prefix``: the field's dotted place in the profile."""
    kinds = {"datasets": list_datasets(), "models": list_models(), "inits": list(INITS)}
    fields = [f.name for f in dataclasses.fields(values)]
    for field_name in fields:
        kind = next((k for k in kinds if field_name == k or field_name.endswith("_" + k)), None)
        for name in getattr(values, field_name) if kind else ():
            if name not in kinds[kind]:
                raise ParamsError(f"{source_of(field_name)}: {prefix}{field_name} names unknown {kind[:-1]} "
                                  f"{name!r}{did_you_mean(name, kinds[kind])}; known: {', '.join(kinds[kind])}")
    indomain = [(f, i) for f in fields if f == "inits" or f.endswith("_inits")
                for i in getattr(values, f) if indomain_start(i) is not None]
    if indomain and not dino_datasets:
        field_name, init = indomain[0]
        raise ParamsError(f"{source_of(field_name)}: {prefix}{field_name} names {init!r}, but dino_datasets is "
                          f"empty: name the datasets to pretrain on in-domain (dino_datasets: [...])")


def _figure_sections(current: dict, given, source: str) -> dict:
    """``given`` checked as ``{figure: {setting: value}}`` and merged into ``current`` figure by figure (an
    override names only the settings it changes); each figure's Settings checks its own values."""
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise ParamsError(f"{source}: figures={given!r} should be a mapping of figure: {{setting: value}}, "
                          f"e.g. {{fig3: {{models: [resnet18, deit_tiny]}}}}")
    return {**current, **{name: {**current.get(name, {}), **values} for name, values in given.items()}}


def figure_settings(params: Params, figure: str, cls):
    """Figure ``figure``'s section of the profile (``figures: {<figure>: {...}}``) as its ``cls``, a frozen
    dataclass whose defaults are the paper's: every key one of its fields, every value of that field's type
    (checked as Params' own, and by ``cls.__post_init__``), every dataset, model and init it names registered
    (fields ``datasets``, ``models``, ``inits``, or ending so); a ParamsError names ``figures.<figure>.<key>``."""
    source = f"profile {params.profile!r}"
    settings = _nested(cls, cls(), params.figures.get(figure, {}), source, f"figures.{figure}.")
    _check_names(settings, params.dino_datasets, lambda _: source, f"figures.{figure}.")
    return settings
