"""The backbone registry, keyed by the paper's names, and the one model interface (docs/protocol.md §7).

``create_model("deit_small", init="dino", num_outputs=5, in_chans=1, img_size=64)`` builds a timm
network, loads the init's weights through timm's own pretrained loading (hub download, or a local
file), adapts a grayscale stem keeping the R-channel filter, and wraps it in :class:`Backbone`:
``forward`` (logits), ``features`` (pooled / CLS features for k-NN), ``feature_map`` (a spatial map for
segmentation and Grad-CAM) and, for ViTs, ``attention_maps``. Later code never branches on names.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from torch import nn

from .dino_checkpoint import PretrainCheckpointError, read_checkpoint

INDOMAIN_SUFFIX = "+dino_indomain"  # DINO on the target training set (medvit.pretrain), from a start init
INDOMAIN_STARTS = ("random", "imagenet")
INITS = ("random", "imagenet", "dino", *(s + INDOMAIN_SUFFIX for s in INDOMAIN_STARTS))
WEIGHTS_DIR_ENV = "MEDVIT_WEIGHTS_DIR"
DINO_RESNET50_URL = "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"


class ModelError(ValueError):
    """An unknown model or init, or a model/init pair that does not exist."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained; the message names them and how to provide a local file."""


@dataclass(frozen=True)
class BackboneSpec:
    """A paper backbone: its timm architecture and, per pretrained init, the weights that exist."""

    name: str
    family: str  # "resnet" | "vit"
    arch: str  # timm architecture for random init
    weights: dict[str, str] = field(default_factory=dict)  # init -> timm tag "arch.tag" or a URL
    dims: str = ""

    def weights_for(self, init: str) -> str | None:
        if init not in INITS:
            raise ModelError(f"unknown init {init!r}; expected one of {INITS}")
        if indomain_start(init) is not None:  # the weights are a pretraining checkpoint: create_model's weights_file
            self.weights_for(indomain_start(init))  # its start init must exist for this backbone
            return None
        if init == "random":
            return None
        if init not in self.weights:
            have = ["random", *self.weights]
            raise ModelError(f"no {init!r} weights exist for {self.name}; its inits are {have} "
                             f"(DINO weights exist only for resnet50 and deit_small)")
        return self.weights[init]


BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in [
    BackboneSpec("resnet18", "resnet", "resnet18", {"imagenet": "resnet18.tv_in1k"}),
    BackboneSpec("resnet50", "resnet", "resnet50", {"imagenet": "resnet50.tv_in1k", "dino": DINO_RESNET50_URL}),
    BackboneSpec("resnet152", "resnet", "resnet152", {"imagenet": "resnet152.tv_in1k"}),
    BackboneSpec("deit_tiny", "vit", "deit_tiny_patch16_224", {"imagenet": "deit_tiny_patch16_224.fb_in1k"},
                 "dim 192, 3 heads"),
    BackboneSpec("deit_small", "vit", "deit_small_patch16_224",
                 {"imagenet": "deit_small_patch16_224.fb_in1k", "dino": "vit_small_patch16_224.dino"},
                 "dim 384, 6 heads"),
    BackboneSpec("deit_base", "vit", "deit_base_patch16_224", {"imagenet": "deit_base_patch16_224.fb_in1k"},
                 "dim 768, 12 heads"),
]}


def indomain_start(init: str) -> str | None:
    """The start init of an in-domain DINO init (``"imagenet+dino_indomain"`` → ``"imagenet"``), else None."""
    return init.removesuffix(INDOMAIN_SUFFIX) if init.endswith(INDOMAIN_SUFFIX) else None


def list_models(init: str | None = None) -> list[str]:
    """The paper's backbone names; with ``init``, only those for which that init exists."""
    if init is not None and init not in INITS:
        raise ModelError(f"unknown init {init!r}; expected one of {INITS}")
    if init is not None:
        init = indomain_start(init) or init  # an in-domain init exists where its start init does
    return [n for n, s in BACKBONES.items() if init in (None, "random") or init in s.weights]


def model_inits(name: str) -> list[str]:
    """The inits that exist for backbone ``name`` (the in-domain DINO ones need a pretraining checkpoint)."""
    inits = ["random", *get_spec(name).weights]
    return inits + [s + INDOMAIN_SUFFIX for s in INDOMAIN_STARTS if s in inits]


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ModelError(f"unknown model {name!r}; registered models: {', '.join(BACKBONES)}")
    return BACKBONES[name]


class Backbone(nn.Module):
    """One interface over a timm ResNet or ViT, with a ``Linear(feat_dim, num_outputs)`` head."""

    def __init__(self, net: nn.Module, spec: BackboneSpec, init: str):
        super().__init__()
        self.net = net
        self.name, self.family, self.init = spec.name, spec.family, init

    @property
    def feature_dim(self) -> int:
        return self.net.num_features

    @property
    def has_attention(self) -> bool:
        return self.family == "vit"

    @property
    def patch_size(self) -> int:
        """Pixels per feature-map cell: the ViT patch, or the ResNet's output stride (32, or 8 dilated)."""
        return self.net.patch_embed.patch_size[0] if self.has_attention else self.net.feature_info[-1]["reduction"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: global average pool (ResNet) or the CLS token after the final norm (ViT)."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """A spatial map (B, C, h, w): the last stage (ResNet) or the patch tokens without CLS (ViT)."""
        out = self.net.forward_features(x)
        if not self.has_attention:
            return out
        tokens = out[:, self.net.num_prefix_tokens:]
        h, w = self.grid_size(x.shape[-2:])
        return tokens.transpose(1, 2).reshape(len(x), -1, h, w)

    def grid_size(self, image_hw) -> tuple[int, int]:
        p = self.patch_size
        return image_hw[0] // p, image_hw[1] // p

    def saliency_layer(self) -> nn.Module:
        """Grad-CAM's target layer: the last bottleneck block (ResNet ``layer4[-1]``)."""
        if self.has_attention:
            raise ModelError(f"{self.name} is a ViT: use attention_maps, not Grad-CAM's layer")
        return self.net.layer4[-1]

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Softmaxed attention of every block, each (B, heads, T, T), tokens = prefix (CLS) + patches."""
        if not self.has_attention:
            raise ModelError(f"{self.name} is a CNN and has no attention maps")
        maps, hooks, fused = [], [], []
        for blk in self.net.blocks:
            fused.append(blk.attn.fused_attn)
            blk.attn.fused_attn = False  # the explicit path computes (and exposes) the softmax
            hooks.append(blk.attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(o.detach())))
        try:
            self.net.forward_features(x)
        finally:
            for blk, f, h in zip(self.net.blocks, fused, hooks):
                blk.attn.fused_attn = f
                h.remove()
        return maps


def _weights_source(tag: str, weights_file: str | os.PathLike | None) -> Path | None:
    """A local weights file: ``weights_file`` if given, else ``$MEDVIT_WEIGHTS_DIR/<name>.{safetensors,pth,...}``."""
    if weights_file is not None:
        p = Path(weights_file).expanduser()
        if not p.is_file():
            raise WeightsUnavailableError(f"weights file not found: {p} (for {tag})")
        return p
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if folder:
        stem = Path(tag).name if "://" in tag else tag
        for ext in ("", ".safetensors", ".pth", ".pt", ".bin"):
            p = Path(folder).expanduser() / (stem if stem.endswith((".pth", ".pt")) else stem + ext)
            if p.is_file():
                return p
    return None


def _hub_cached_file(tag: str) -> Path | None:
    """The hub file of a timm tag if it is already in the local Hugging Face cache (usable offline)."""
    repo = timm.models.get_pretrained_cfg(tag).hf_hub_id
    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _host_unresolvable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (its name does not resolve), or None. Fails fast offline
    instead of waiting out the hub client's retries for each file."""
    host = urlparse(url).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        return f"{host} cannot be resolved ({err}), no internet"
    return None


def _unavailable(spec: BackboneSpec, init: str, tag: str, err: Exception) -> WeightsUnavailableError:
    stem = Path(tag).name if "://" in tag else f"{tag}.safetensors (or .pth)"
    where = tag if "://" in tag else f"the Hugging Face hub (timm/{tag.split('.')[0]}, tag {tag.split('.', 1)[1]})"
    return WeightsUnavailableError(
        f"{init} weights for {spec.name} ({tag}) could not be loaded from {where}: {type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}. To use a local copy, pass weights_file=<path> or put "
        f"{stem} in ${WEIGHTS_DIR_ENV}.")


def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("teacher", "state_dict", "model"):  # DINO / common checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}


def _build_pretrained(spec: BackboneSpec, init: str, tag: str, local: Path | None, **kw) -> nn.Module:
    """A 3-channel timm network with the init's weights, through timm's loader (or a plain state dict)."""
    if "://" not in tag:  # a timm pretrained tag: timm downloads, filters, resamples pos-embeds, drops the head
        if local is None and (why := _host_unresolvable("https://huggingface.co")):
            local = _hub_cached_file(tag)
            if local is None:
                raise _unavailable(spec, init, tag, ConnectionError(why))
        overlay = dict(file=str(local)) if local else None
        try:
            return timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=overlay, **kw)
        except WeightsUnavailableError:
            raise
        except Exception as err:
            if local is not None:
                raise WeightsUnavailableError(f"cannot load {local} as {tag}: {type(err).__name__}: {err}") from None
            raise _unavailable(spec, init, tag, err) from None
    net = timm.create_model(spec.arch, pretrained=False, **kw)  # a raw checkpoint (DINO ResNet-50)
    try:
        if local is None and (why := _host_unresolvable(tag)):
            raise ConnectionError(why)
        state = _load_state_dict(local) if local else torch.hub.load_state_dict_from_url(tag, map_location="cpu")
    except Exception as err:
        if local is not None:
            raise WeightsUnavailableError(f"cannot read weights file {local}: {type(err).__name__}: {err}") from None
        raise _unavailable(spec, init, tag, err) from None
    classifier = net.default_cfg["classifier"]
    head = {f"{classifier}.weight", f"{classifier}.bias"}
    state = {k: v for k, v in state.items() if k not in head}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # strict=False still raises on shape mismatches
        first = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise WeightsUnavailableError(f"{local or tag} does not fit {spec.arch}: {first}") from None
    if set(missing) - head or unexpected:
        raise WeightsUnavailableError(
            f"{local or tag} does not fit {spec.arch}: missing {sorted(set(missing) - head)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}")
    return net


def _to_one_channel(net: nn.Module, family: str) -> None:
    """Rebuild the stem / patch embedding for 1-channel input, keeping the R-channel filter (``w[:, :1]``)."""
    parent, attr = (net.patch_embed, "proj") if family == "vit" else (net, "conv1")
    old: nn.Conv2d = getattr(parent, attr)
    new = nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(old.weight[:, :1])
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, attr, new)


def _build_random(spec: BackboneSpec, in_chans: int, **kw) -> nn.Module:
    """A randomly initialised timm network with the authors' random init (docs/protocol.md §7).

    ResNets: torchvision's ``resnet*(weights=None)`` init, which the authors build: convolutions
    Kaiming-normal (fan_out, ReLU), BatchNorm scale 1 and shift 0, the classifier PyTorch's default
    ``nn.Linear`` init, and **no** zero-init of the last BatchNorm of each residual block (timm's default,
    ``zero_init_last=True``, is turned off). A 1-channel stem is a fresh ``nn.Conv2d`` with PyTorch's
    default init, as the authors' ``modify_first_layer`` rebuilds it. ViTs: timm's init, whose differences
    from the authors' (DINO's copy of timm's ViT) are listed in docs/protocol.md §7.
    """
    if spec.family != "resnet":
        return timm.create_model(spec.arch, pretrained=False, in_chans=in_chans, **kw)
    net = timm.create_model(spec.arch, pretrained=False, in_chans=in_chans, zero_init_last=False, **kw)
    if in_chans != 3:
        net.conv1.reset_parameters()  # the authors' rebuilt stem: nn.Conv2d(in_chans, ...) as constructed
    return net


def load_backbone_state(path: str | os.PathLike, name: str, init: str, in_chans: int) -> dict:
    """The teacher backbone of a finished pretraining checkpoint, for ``create_model(name, init,
    weights_file=path)``: a missing, foreign, unfinished or mismatched file is a WeightsUnavailableError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"pretraining checkpoint not found: {path} (for {name}, init {init!r}); "
                                      f"run medvit.pretrain_dino with checkpoint={path} first")
    try:
        state = read_checkpoint(path)
    except PretrainCheckpointError as err:
        raise WeightsUnavailableError(str(err)) from None
    settings, start = state["settings"], indomain_start(init)
    wanted = {"model": name, "start_init": start, "in_chans": in_chans}
    diff = [f"{k}: checkpoint {settings[k]!r}, asked {v!r}" for k, v in wanted.items() if settings[k] != v]
    if diff:
        raise WeightsUnavailableError(f"pretraining checkpoint {path} does not fit {name} / {init!r} / "
                                      f"in_chans={in_chans}: {'; '.join(diff)}")
    epochs = settings["config"]["epochs"]
    if state["epoch"] < epochs:
        raise WeightsUnavailableError(f"pretraining checkpoint {path} stopped at epoch {state['epoch']} of {epochs}; "
                                      f"finish it with pretrain_dino(..., checkpoint={str(path)!r})")
    return state["kept_backbone"]


def _build_indomain(spec: BackboneSpec, init: str, weights_file, in_chans: int, **kw) -> nn.Module:
    """The network with the teacher backbone of a finished in-domain DINO pretraining (``medvit.pretrain_dino``'s
    checkpoint); a ViT's position embedding is resampled to the patch grid if the pretraining ran at another size."""
    if weights_file is None:
        start = indomain_start(init)
        raise WeightsUnavailableError(
            f"init {init!r} of {spec.name} is the checkpoint of an in-domain DINO pretraining, which must run first: "
            f"medvit.pretrain_dino(create_model({spec.name!r}, {start!r}, num_outputs=0, in_chans=..., img_size=...), "
            f"<training set>, DinoConfig(...), checkpoint=<path>), then pass weights_file=<path>")
    state = load_backbone_state(weights_file, spec.name, init, in_chans)
    net = timm.create_model(spec.arch, pretrained=False, in_chans=in_chans, **kw)
    if spec.family == "vit" and state["pos_embed"].shape != net.pos_embed.shape:
        state["pos_embed"] = timm.layers.resample_abs_pos_embed(
            state["pos_embed"], new_size=list(net.patch_embed.grid_size), num_prefix_tokens=net.num_prefix_tokens)
    missing, unexpected = net.load_state_dict(state, strict=False)
    classifier = net.default_cfg["classifier"]
    missing = set(missing) - {f"{classifier}.weight", f"{classifier}.bias"}  # the new head
    if missing or unexpected:
        raise WeightsUnavailableError(f"{weights_file} does not fit {spec.arch}: missing {sorted(missing)[:5]}, "
                                      f"unexpected {sorted(unexpected)[:5]}")
    return net


def create_model(name: str, init: str = "random", num_outputs: int = 0, in_chans: int = 3,
                 img_size: int = 224, weights_file: str | os.PathLike | None = None,
                 output_stride: int | None = None) -> Backbone:
    """A paper backbone with ``init`` weights and a fresh ``Linear(feat_dim, num_outputs)`` head.

    ``num_outputs=0`` gives no head (features only, for k-NN). ``img_size`` sets a ViT's patch grid
    (pretrained position embeddings are interpolated by timm). Pretrained weights come from timm's
    hub loading, or ``weights_file`` / ``$MEDVIT_WEIGHTS_DIR`` for a local copy; when they cannot be
    had, :class:`WeightsUnavailableError` says which and how to provide them (never a random fallback).
    ``"<start>+dino_indomain"`` inits load the teacher backbone of ``medvit.pretrain_dino``'s checkpoint,
    given as ``weights_file`` (without it: a WeightsUnavailableError saying the pretraining must run first).
    ``output_stride`` (8 or 16, ResNets only) replaces the last stages' strides by dilations (DeepLabV3).
    """
    spec = get_spec(name)
    tag = spec.weights_for(init)
    if in_chans not in (1, 3):
        raise ModelError(f"in_chans must be 1 or 3, got {in_chans}")
    kw = dict(num_classes=num_outputs)
    if spec.family == "vit":
        kw["img_size"] = img_size
    if output_stride is not None:
        if spec.family != "resnet" or output_stride not in (8, 16):
            raise ModelError(f"output_stride={output_stride!r}: only ResNets take one, and it must be 8 or 16")
        kw["output_stride"] = output_stride
    if indomain_start(init) is not None:
        net = _build_indomain(spec, init, weights_file, in_chans, **kw)
    elif tag is None:
        if weights_file is not None:
            raise ModelError(f"weights_file={weights_file!r} was given with init='random'; name the init it holds")
        net = _build_random(spec, in_chans, **kw)
    else:
        net = _build_pretrained(spec, init, tag, _weights_source(tag, weights_file), **kw)
        if in_chans == 1:
            _to_one_channel(net, spec.family)
    return Backbone(net, spec, init)
