"""The backbone registry (docs/protocol.md §7): every model × init builds and trains, pretrained weights load
through the user's path from a checkpoint the test writes itself, grayscale stems keep the R filter,
ViT attention maps are proper softmaxes, and every failure is one clear error."""
from __future__ import annotations

import time

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from medvit import ModelError, WeightsUnavailableError, create_model, list_models, model_inits
from medvit.models.backbones import BACKBONES, DINO_RESNET50_URL, INITS

IMG = 32
BATCH = 2
NUM_OUTPUTS = 3
FEATURE_DIM = {"resnet18": 512, "resnet50": 2048, "resnet152": 2048,  # docs/protocol.md §3, §7
               "deit_tiny": 192, "deit_small": 384, "deit_base": 768}
HEADS = {"deit_tiny": 3, "deit_small": 6, "deit_base": 12}
BIG = {"resnet152", "deit_base"}


def _marked(name: str, *values):
    return pytest.param(name, *values, id="-".join([name, *map(str, values)]),
                        marks=[pytest.mark.slow] if name in BIG else [])


# the in-domain DINO inits load a pretraining checkpoint: tests/test_pretrain.py
MODEL_INITS = [_marked(n, i) for n in list_models() for i in model_inits(n) if not i.endswith("+dino_indomain")]


def _perturbed(state: dict) -> dict:
    """Every float tensor nudged, so a match can only come from loading this file (not a default init)."""
    g = torch.Generator().manual_seed(0)
    return {k: (v + 0.01 * torch.randn(v.shape, generator=g)).contiguous() if v.is_floating_point() else v
            for k, v in state.items()}


def write_pretrained_checkpoint(name: str, init: str, folder) -> dict:
    """Save a checkpoint of ``name``'s ``init`` weights where ``$MEDVIT_WEIGHTS_DIR`` users put theirs.

    timm tags: ``<tag>.safetensors`` of ``timm.create_model(<arch>, num_classes=<the tag's>)`` (1000, or 0
    for the DINO ViT); DINO ResNet-50: a torchvision state dict without ``fc`` as ``dino_resnet50_pretrain.pth``.
    Returns the saved state dict.
    """
    tag = BACKBONES[name].weights[init]
    if "://" in tag:
        assert tag == DINO_RESNET50_URL
        state = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
        state = _perturbed(state)
        torch.save(state, folder / "dino_resnet50_pretrain.pth")
        return state
    classes = timm.models.get_pretrained_cfg(tag).num_classes
    state = _perturbed(timm.create_model(tag.split(".")[0], num_classes=classes).state_dict())
    save_file(state, str(folder / f"{tag}.safetensors"))
    return state


def _head_keys(net) -> set[str]:
    classifier = net.default_cfg["classifier"]
    return {f"{classifier}.weight", f"{classifier}.bias"}


def assert_backbone_equals(net, saved: dict) -> None:
    """Every backbone tensor of ``net`` is the saved one (the head is new); a ViT's position embedding is
    the saved one resampled to the model's patch grid (timm's loader), its CLS slot unchanged."""
    mine = net.state_dict()
    head = _head_keys(net)
    assert set(mine) - head == set(saved) - head
    for key in sorted(set(mine) - head):
        if key == "pos_embed" and mine[key].shape != saved[key].shape:
            resampled = timm.layers.resample_abs_pos_embed(saved[key], new_size=list(net.patch_embed.grid_size),
                                                           num_prefix_tokens=net.num_prefix_tokens)
            torch.testing.assert_close(mine[key], resampled)
            torch.testing.assert_close(mine[key][:, :1], saved[key][:, :1], rtol=0, atol=0)
        else:
            assert torch.equal(mine[key], saved[key]), f"{key} differs from the saved checkpoint"


@pytest.mark.parametrize("name, init", MODEL_INITS)
def test_every_model_and_init_builds_and_trains(name, init, tmp_path, monkeypatch):
    saved = None
    if init != "random":
        monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(tmp_path))
        saved = write_pretrained_checkpoint(name, init, tmp_path)
    model = create_model(name, init, num_outputs=NUM_OUTPUTS, img_size=IMG)
    assert (model.name, model.init) == (name, init)
    if saved is not None:
        assert_backbone_equals(model.net, saved)

    x = torch.randn(BATCH, 3, IMG, IMG)
    model.train()
    logits = model(x)
    assert logits.shape == (BATCH, NUM_OUTPUTS)
    assert torch.isfinite(logits).all()
    (logits ** 2).mean().backward()
    params = dict(model.named_parameters())
    no_grad = [k for k, p in params.items() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in params.values())

    model.eval()
    with torch.no_grad():
        feats = model.features(x)
        fmap = model.feature_map(x)
    assert feats.shape == (BATCH, FEATURE_DIM[name]) == (BATCH, model.feature_dim)
    assert torch.isfinite(feats).all()
    grid = IMG // model.patch_size
    assert fmap.shape == (BATCH, FEATURE_DIM[name], grid, grid)


def test_features_only_model_has_no_head():
    model = create_model("resnet18", "random", num_outputs=0)
    x = torch.randn(BATCH, 3, IMG, IMG)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (BATCH, 512)
        torch.testing.assert_close(model(x), model.features(x))


def test_vit_pretrained_weights_load_exactly_at_224(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(tmp_path))
    saved = write_pretrained_checkpoint("deit_tiny", "imagenet", tmp_path)
    model = create_model("deit_tiny", "imagenet", num_outputs=2, img_size=224)
    assert torch.equal(model.net.pos_embed, saved["pos_embed"])
    assert_backbone_equals(model.net, saved)


def test_weights_file_argument_loads_that_file(tmp_path):
    saved = write_pretrained_checkpoint("resnet18", "imagenet", tmp_path)
    model = create_model("resnet18", "imagenet", num_outputs=2,
                         weights_file=tmp_path / "resnet18.tv_in1k.safetensors")
    assert_backbone_equals(model.net, saved)


def test_list_models_by_init_follows_the_paper():
    assert list_models() == ["resnet18", "resnet50", "resnet152", "deit_tiny", "deit_small", "deit_base"]
    assert list_models("random") == list_models("imagenet") == list_models()
    assert list_models("dino") == ["resnet50", "deit_small"]
    assert model_inits("deit_small") == ["random", "imagenet", "dino", "random+dino_indomain", "imagenet+dino_indomain"]


# --- bad input: one clear error -------------------------------------------------------------------------

def test_unknown_model_lists_registered_names():
    with pytest.raises(ModelError, match="unknown model 'vit_huge'") as err:
        create_model("vit_huge")
    for name in list_models():
        assert name in str(err.value)


def test_unknown_init_lists_valid_inits():
    with pytest.raises(ModelError, match="unknown init 'imagenet21k'") as err:
        create_model("resnet50", "imagenet21k")
    for init in INITS:
        assert init in str(err.value)
    with pytest.raises(ModelError, match="unknown init"):
        list_models("imagenet21k")


def test_model_init_pair_that_does_not_exist_names_the_existing_inits():
    with pytest.raises(ModelError, match="no 'dino' weights exist for resnet18") as err:
        create_model("resnet18", "dino")
    assert "['random', 'imagenet']" in str(err.value)


def test_weights_file_with_random_init_is_rejected(tmp_path):
    with pytest.raises(ModelError, match="init='random'"):
        create_model("resnet18", "random", weights_file=tmp_path / "w.pth")


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsUnavailableError, match="nope.safetensors"):
        create_model("resnet18", "imagenet", weights_file=missing)


def test_weights_file_for_another_architecture_is_rejected(tmp_path, monkeypatch):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "dino_resnet50_pretrain.pth")
    monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="does not fit resnet50"):
        create_model("resnet50", "dino")


@pytest.mark.parametrize("name, init, weights", [
    ("resnet50", "imagenet", "resnet50.tv_in1k"),
    ("deit_small", "dino", "vit_small_patch16_224.dino"),
    ("resnet50", "dino", "dino_resnet50_pretrain.pth"),
])
def test_unreachable_pretrained_weights_fail_fast_naming_weights_and_folder(name, init, weights, no_network):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        create_model(name, init, num_outputs=2)
    assert time.perf_counter() - start < 10, "offline failure should not wait on network retries"
    message = str(err.value)
    assert weights in message and "MEDVIT_WEIGHTS_DIR" in message


# --- grayscale (docs/protocol.md §3) -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "deit_tiny"])
def test_random_init_accepts_one_channel_input(name):
    model = create_model(name, "random", num_outputs=NUM_OUTPUTS, in_chans=1, img_size=IMG)
    logits = model(torch.randn(BATCH, 1, IMG, IMG))
    assert logits.shape == (BATCH, NUM_OUTPUTS) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name, init, stem", [
    ("resnet18", "imagenet", "conv1"),
    ("deit_tiny", "imagenet", "patch_embed.proj"),
    ("resnet50", "dino", "conv1"),
])
def test_pretrained_one_channel_stem_keeps_the_red_filter(name, init, stem, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(tmp_path))
    saved = write_pretrained_checkpoint(name, init, tmp_path)
    model = create_model(name, init, num_outputs=NUM_OUTPUTS, in_chans=1, img_size=IMG)
    weight = model.net.get_parameter(f"{stem}.weight")
    assert weight.shape[1] == 1
    assert torch.equal(weight, saved[f"{stem}.weight"][:, :1])
    if f"{stem}.bias" in saved:
        assert torch.equal(model.net.get_parameter(f"{stem}.bias"), saved[f"{stem}.bias"])
    logits = model(torch.randn(BATCH, 1, IMG, IMG))
    assert logits.shape == (BATCH, NUM_OUTPUTS) and torch.isfinite(logits).all()


def test_in_chans_other_than_one_or_three_is_rejected():
    with pytest.raises(ModelError, match="in_chans must be 1 or 3, got 4"):
        create_model("resnet18", in_chans=4)


# --- attention maps (docs/protocol.md §9) -------------------------------------------------------------------

@pytest.mark.parametrize("name", [_marked(n) for n in list_models() if BACKBONES[n].family == "vit"])
@pytest.mark.parametrize("img", [32, 64])
def test_vit_attention_maps_are_row_stochastic_one_per_block(name, img):
    model = create_model(name, "random", img_size=img).eval()
    x = torch.randn(BATCH, 3, img, img)
    with torch.no_grad():
        before = model(x)
        maps = model.attention_maps(x)
        after = model(x)
    grid = img // model.patch_size
    tokens = 1 + grid * grid
    assert len(maps) == len(model.net.blocks) == 12
    for a in maps:
        assert a.shape == (BATCH, HEADS[name], tokens, tokens)
        assert (a >= 0).all()
        torch.testing.assert_close(a.sum(-1), torch.ones(BATCH, HEADS[name], tokens))
    assert all(blk.attn.fused_attn == model.net.blocks[0].attn.fused_attn for blk in model.net.blocks)
    torch.testing.assert_close(before, after)  # the model is left as it was


def test_cnn_has_no_attention_maps_but_a_saliency_layer():
    model = create_model("resnet18")
    assert not model.has_attention
    with pytest.raises(ModelError, match="CNN"):
        model.attention_maps(torch.randn(1, 3, IMG, IMG))
    assert model.saliency_layer() is model.net.layer4[-1]
    with pytest.raises(ModelError, match="ViT"):
        create_model("deit_tiny", img_size=IMG).saliency_layer()
