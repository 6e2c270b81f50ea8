"""Fig 4 saliency (docs/protocol.md §10): Grad-CAM for CNNs, CLS attention and its top-50% mask for ViTs,
the model resolution (fine-tuned checkpoint, else pretrained backbone, else a reason) and the explorer."""
import itertools

import matplotlib
import numpy as np
import pytest
import timm
import torch
from torchvision.transforms import v2

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medvit import create_dataset, create_model, create_transform, load_params  # noqa: E402
from medvit.data.synthetic import SPLIT_SEEDS, make_shapes  # noqa: E402
from medvit.data.transforms import resize_size  # noqa: E402
from medvit.models.backbones import BACKBONES, Backbone  # noqa: E402
from medvit.runs import Run  # noqa: E402
from medvit.experiments.inputs import save_checkpoint
from medvit.explorer import Explorer  # noqa: E402
from medvit.plots.fig4 import fig4_figure, fig4_unavailable  # noqa: E402
from medvit.figures.fig4 import saliency_grid, saliency_model  # noqa: E402
from medvit.saliency import cls_attention, saliency_maps, top_mass_mask  # noqa: E402


def _figure_text(fig) -> str:
    """All the figure's text, whitespace (line wrapping) collapsed to single spaces."""
    return " ".join(" ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text)).split())


# --- the top-50% mask -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_top_mass_mask_is_the_smallest_set_holding_half_the_mass(seed):
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(2, 3, generator=g) ** 3  # skewed, like attention
    mask = top_mass_mask(weights)
    total = weights.sum().item()
    assert weights[mask].sum().item() >= 0.5 * total
    size = int(mask.sum())
    cells = weights.flatten().tolist()
    for k in range(1, size):  # brute force: no smaller set of cells reaches half the mass
        assert all(sum(c) < 0.5 * total for c in itertools.combinations(cells, k))


def test_top_mass_mask_keeps_a_dominant_patch_alone_and_works_per_map():
    weights = torch.tensor([[[0.7, 0.1], [0.1, 0.1]], [[0.25, 0.25], [0.25, 0.25]]])
    mask = top_mass_mask(weights)
    assert mask[0].tolist() == [[True, False], [False, False]]
    assert int(mask[1].sum()) == 2  # uniform: half the cells hold exactly half the mass


# --- ViT: CLS attention ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("img_size", [32, 48])
def test_vit_saliency_is_cls_attention_on_the_patch_grid_upsampled_to_the_image(img_size):
    torch.manual_seed(0)
    model = create_model("deit_tiny", "random", num_outputs=3, img_size=img_size)
    images = torch.randn(2, 3, img_size, img_size)
    s = saliency_maps(model, images)
    g = img_size // 16
    assert s.method == "cls_attention"
    assert s.maps.shape == s.masks.shape == (2, img_size, img_size)
    assert s.head_maps.shape == s.head_masks.shape == (2, 3, img_size, img_size)  # DeiT-T: 3 heads
    assert s.grid.shape == (2, 3, g, g)
    np.testing.assert_allclose(s.grid.sum((-1, -2)), 1.0, rtol=1e-5)  # each head renormalised over patches
    assert s.maps.min() >= 0 and s.maps.max() == pytest.approx(1.0)
    # nearest upsampling: every patch covers its 16x16 pixels with one value; the mask is the grid's mask
    mean_grid = torch.from_numpy(s.grid.mean(1))
    expected_mask = top_mass_mask(mean_grid).repeat_interleave(16, -1).repeat_interleave(16, -2)
    assert np.array_equal(s.masks, expected_mask.numpy())
    expected_map = mean_grid.repeat_interleave(16, -1).repeat_interleave(16, -2)
    expected_map = expected_map / expected_map.amax((-1, -2), keepdim=True)
    np.testing.assert_allclose(s.maps, expected_map.numpy(), rtol=1e-5)
    # the grid is the last block's CLS row over the patches
    last = model.attention_maps(images)[-1][:, :, 0, 1:]
    np.testing.assert_allclose(cls_attention(model, images).flatten(-2).numpy(),
                               (last / last.sum(-1, keepdim=True)).numpy(), rtol=1e-5)
    heat, mask = s.select(2)
    assert heat.shape == mask.shape == (2, img_size, img_size)
    with pytest.raises(ValueError, match="index in 0..2"):
        s.select(3)


# --- CNN: Grad-CAM ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_outputs", [3, 1, 0])  # multiclass, a one-logit binary model, a headless backbone
def test_gradcam_has_the_image_size_and_values_in_unit_range(num_outputs):
    torch.manual_seed(0)
    model = create_model("resnet18", "random", num_outputs=num_outputs)
    s = saliency_maps(model, torch.randn(3, 3, 64, 96))
    assert s.method == "gradcam" and s.masks is None
    assert s.maps.shape == (3, 64, 96)
    assert s.maps.min() >= 0 and s.maps.max() <= 1 and s.maps.max() > 0


def test_gradcam_rejects_targets_that_do_not_match_the_images():
    model = create_model("resnet18", "random", num_outputs=3)
    with pytest.raises(ValueError, match="2 targets for 3 images"):
        saliency_maps(model, torch.randn(3, 3, 64, 64), targets=[0, 1])


class PixelReader(torch.nn.Module):
    """A CNN, in the shape medvit's ``Backbone`` wraps (its ``layer4[-1]`` is Grad-CAM's layer), built so that its
    answer is known: ``layer4`` keeps, per 4x4 cell, how far the pixels' channel mean is above ``threshold``
    (``sign`` +1: bright pixels, the synthetic shapes' objects) or below it (``sign`` -1: the dark background),
    and every class logit is the mean of that map. Each logit reads only those pixels, so Grad-CAM must
    highlight them, without training and so without depending on the machine's floating point."""

    def __init__(self, sign: float, threshold: float, num_classes: int = 3):
        super().__init__()
        pixels = torch.nn.Conv2d(3, 1, kernel_size=1)
        with torch.no_grad():
            pixels.weight.fill_(sign / 3)
            pixels.bias.fill_(-sign * threshold)
        self.layer4 = torch.nn.Sequential(pixels, torch.nn.ReLU(), torch.nn.AvgPool2d(4))
        self.fc = torch.nn.Linear(1, num_classes)
        with torch.no_grad():
            self.fc.weight.fill_(1.0)
            self.fc.bias.zero_()
        self.num_classes, self.num_features = num_classes, 1

    def forward(self, x):
        return self.fc(self.layer4(x).mean((2, 3)))


@pytest.mark.parametrize("reads", ["object", "background"])
def test_gradcam_highlights_the_pixels_a_cnn_reads(reads):
    """Grad-CAM through medvit's CNN interface (``saliency_layer``), the eval transform and the upsampling to the
    image: on a CNN whose logits read only the object's pixels (or only the background's), the map is high where
    it reads and near zero elsewhere, in the images' own geometry (masks through the eval transform's)."""
    size, n_test = 48, 16
    test = create_dataset("synthetic_shapes", "test", size=size, num_classes=3, n_train=8, n_val=8, n_test=n_test)
    tf = create_transform(test.info, size, train=False)
    images = torch.stack([tf(test.load_image(i)) for i in range(n_test)])
    masks = torch.from_numpy(make_shapes(n_test, size, 3, 3, SPLIT_SEEDS["test"])[2])
    same_geometry = v2.Compose([v2.Resize((resize_size(size),) * 2, interpolation=v2.InterpolationMode.NEAREST),
                                v2.CenterCrop(size)])  # the eval transform's geometry, applied to the masks
    masks = same_geometry(masks).numpy()
    # normalised channel means: the objects' pixels are above 1.0 (raw > ~140), the background's mostly below 0.5
    net = PixelReader(sign=1.0, threshold=1.0) if reads == "object" else PixelReader(sign=-1.0, threshold=0.5)
    model = Backbone(net, BACKBONES["resnet18"], "random")
    assert model.saliency_layer() is net.layer4[-1]
    cam = saliency_maps(model, images, targets=test.labels.tolist()).maps
    assert cam.shape == (n_test, size, size)
    inside = np.mean([c[m].mean() for c, m in zip(cam, masks)])
    outside = np.mean([c[~m].mean() for c, m in zip(cam, masks)])
    read, other = (inside, outside) if reads == "object" else (outside, inside)
    # by construction (measured: read 0.74 / 0.83, other 0.02 / 0.14, the same on 1 and 2 threads); the other
    # side is not 0 where 4x4 cells straddle the object's edge, or the background inside a ring or a cross
    assert read > 0.5 and other < 0.25, (reads, inside, outside)


# --- which model Fig 4 shows -----------------------------------------------------------------------------------

@pytest.fixture
def smoke(tmp_path, monkeypatch):
    """The smoke profile with results in a temporary folder and a DeiT-T fine-tuned 'checkpoint' (untrained
    weights saved through the same code as fine-tuning) for synthetic_shapes, random init, repetition 0."""
    monkeypatch.delenv("MEDVIT_WEIGHTS_DIR", raising=False)
    params = load_params("smoke", results_dir=str(tmp_path / "results"), fig1_inits=["random", "dino"],
                         figures={"fig4": {"images": 2}})
    opts = params.options_for("synthetic_shapes")
    torch.manual_seed(0)
    model = create_model("deit_tiny", "random", num_outputs=opts["num_classes"], img_size=params.img_size)
    save_checkpoint(model, Run("finetune", "synthetic_shapes", "deit_tiny", "random", 0), params)
    return params


def test_saliency_model_prefers_the_finetuned_checkpoint_and_explains_what_is_missing(smoke):
    found = saliency_model(smoke, "synthetic_shapes", "deit_tiny", "random")
    assert found.available and "fine-tuned on synthetic_shapes" in found.source
    no_ckpt = saliency_model(smoke, "synthetic_shapes", "resnet18", "random")
    assert not no_ckpt.available and "no fine-tuned checkpoint at" in no_ckpt.reason
    no_weights = saliency_model(smoke, "synthetic_shapes", "resnet18", "dino")
    assert not no_weights.available and "no 'dino' weights exist for resnet18" in no_weights.reason


def test_saliency_model_falls_back_to_the_pretrained_backbone_of_the_same_init(smoke, tmp_path, monkeypatch):
    net = timm.create_model("deit_tiny_patch16_224", num_classes=1000)  # stands in for the ImageNet weights file
    torch.save(net.state_dict(), tmp_path / "deit_tiny_patch16_224.fb_in1k.pth")
    monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(tmp_path))
    found = saliency_model(smoke, "synthetic_shapes", "deit_tiny", "imagenet")
    assert found.available and found.source == "pretrained imagenet backbone (not fine-tuned)"
    assert found.model.init == "imagenet"
    torch.testing.assert_close(found.model.net.blocks[0].attn.qkv.weight, net.blocks[0].attn.qkv.weight)


def test_fig4_grid_shows_available_models_and_notes_the_unavailable_ones(smoke):
    grid = saliency_grid(smoke)
    assert grid.rows == [("resnet18", "random"), ("deit_tiny", "random")]  # no DINO weights for either
    assert grid.images["synthetic_shapes"].shape == (2, 32, 32, 3)
    resolved, maps = grid.cells["deit_tiny", "random", "synthetic_shapes"]
    assert maps.maps.shape == (2, 32, 32)
    resolved, maps = grid.cells["resnet18", "random", "synthetic_shapes"]
    assert maps is None and "no fine-tuned checkpoint" in resolved.reason
    fig = fig4_figure(grid)
    text = _figure_text(fig)
    assert "unavailable (note 1)" in text and "[1] resnet18 / random on synthetic_shapes: no fine-tuned" in text
    plt.close(fig)


def test_fig4_leaves_out_an_in_domain_init_where_the_profile_does_not_pretrain_it(smoke):
    """The smoke profile pretrains in-domain DINO for DeiT-T only: ResNet18's in-domain init is not in the plan,
    which Fig 4 says as such (not as a missing checkpoint), and a row planned nowhere is not drawn."""
    unplanned = saliency_model(smoke, "synthetic_shapes", "resnet18", "random+dino_indomain")
    assert not unplanned.available and not unplanned.planned
    assert "not in the profile's plan: no in-domain DINO pretraining of resnet18 on synthetic_shapes" in unplanned.reason
    assert "checkpoint" not in unplanned.reason
    grid = saliency_grid(smoke, inits=["random", "random+dino_indomain"])
    assert ("resnet18", "random+dino_indomain") not in grid.rows
    assert ("deit_tiny", "random+dino_indomain") in grid.rows  # planned; unavailable until pretrained
    planned, _ = grid.cells["deit_tiny", "random+dino_indomain", "synthetic_shapes"]
    assert planned.planned and not planned.available
    grid.rows.append(("resnet18", "random+dino_indomain"))  # a row with an unplanned cell, as on a second dataset
    grid.cells["resnet18", "random+dino_indomain", "synthetic_shapes"] = (unplanned, None)
    fig = fig4_figure(grid)
    text = _figure_text(fig)
    assert "not in this profile's plan for synthetic_shapes" in text
    assert "resnet18 / random+dino_indomain" not in text  # not a numbered "unavailable" note
    assert not any("not in the profile's plan" in reason for _, reason in fig4_unavailable(grid)), \
        "the panels say it; the list under the figure is of what could not be had"
    plt.close(fig)


# --- the interactive explorer ----------------------------------------------------------------------------------

def test_explorer_renders_every_available_head_and_an_unavailable_panel_otherwise(smoke):
    explorer = Explorer(smoke)
    assert explorer.num_heads("synthetic_shapes", "random") == 3
    for head in ["mean", 0, 1, 2]:
        fig = explorer.render("synthetic_shapes", 5, "random", head)
        text = _figure_text(fig)
        assert isinstance(fig, plt.Figure)
        assert "deit_tiny random, fine-tuned CLS attention" in text and "top-50% mask" in text
        assert "unavailable: no fine-tuned checkpoint" in text  # resnet18 random has none
        plt.close(fig)
    fig = explorer.render("synthetic_shapes", 0, "random", 7)
    assert "unavailable: head must be 'mean' or an index in 0..2, got 7" in _figure_text(fig)
    plt.close(fig)
    fig = explorer.render("synthetic_shapes", 0, "dino", "mean")
    text = _figure_text(fig)
    assert "no 'dino' weights exist for resnet18" in text and "no 'dino' weights exist for deit_tiny" in text
    plt.close(fig)
    with pytest.raises(ValueError, match="unknown init 'imagenet'"):
        explorer.render("synthetic_shapes", 0, "imagenet")


def test_explorer_widget_redraws_when_a_control_changes(smoke):
    pytest.importorskip("ipywidgets")
    explorer = Explorer(smoke)
    drawn, render = [], explorer.render
    explorer.render = lambda *choice: drawn.append(choice) or render(*choice)
    ui = explorer.widget()
    controls, slider, out = ui.children
    dataset, init, head = controls.children
    assert drawn == [("synthetic_shapes", 0, "random", "mean")]  # the first view is drawn at once
    assert list(head.options) == ["mean", 0, 1, 2]
    assert slider.max == 63  # the smoke profile's 64 test images
    head.value = 1
    slider.value = 3
    assert drawn[-2:] == [("synthetic_shapes", 0, "random", 1), ("synthetic_shapes", 3, "random", 1)]
    init.value = "dino"
    assert list(head.options) == ["mean"]  # no ViT with DINO weights to take heads from
    assert drawn[-1] == ("synthetic_shapes", 3, "dino", "mean")
    plt.close("all")
