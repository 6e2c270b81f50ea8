"""Mean attention distance (paper Fig 5, docs/protocol.md §11): the pure function and the collecting loop."""
import itertools
import math

import numpy as np
import pytest
import torch

from medvit import create_dataset, create_model, create_transform, load_params
from medvit.attention import attention_distance, collect_attention_distance, mean_attention_distance
from medvit.figures.fig5 import plan as plan_fig5
from medvit.runs import Run


def _random_patch_attention(b, heads, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, heads, n, n, generator=g) * 3, -1)


def test_distance_is_zero_when_every_patch_attends_only_to_itself():
    attn = torch.eye(12).expand(2, 3, 12, 12).clone()
    d = mean_attention_distance(attn, (3, 4), patch_size=16, num_prefix_tokens=0)
    assert d.shape == (3,)
    assert torch.allclose(d, torch.zeros(3, dtype=d.dtype))


@pytest.mark.parametrize("grid_hw,patch", [((3, 3), 16), ((2, 5), 8), ((4, 4), 16)])
def test_uniform_attention_gives_mean_pairwise_distance_of_the_grid(grid_hw, patch):
    h, w = grid_hw
    cells = list(itertools.product(range(h), range(w)))
    reference = patch * np.mean([math.dist(a, b) for a in cells for b in cells])  # brute force over positions
    n = h * w
    attn = torch.full((2, 4, n + 1, n + 1), 1.0 / (n + 1))  # uniform, including a CLS token
    d = mean_attention_distance(attn, grid_hw, patch, num_prefix_tokens=1)
    np.testing.assert_allclose(d.numpy(), reference, rtol=1e-10)


def test_distance_is_invariant_to_attention_given_to_the_cls_token():
    h, w = 3, 4
    patches = _random_patch_attention(2, 3, h * w)
    cls_share = torch.rand(2, 3, h * w, 1, generator=torch.Generator().manual_seed(1)) * 0.9
    with_cls = torch.zeros(2, 3, h * w + 1, h * w + 1)
    with_cls[:, :, 1:, 1:] = patches * (1 - cls_share)  # queries give part of their mass to CLS
    with_cls[:, :, 1:, :1] = cls_share
    with_cls[:, :, 0] = torch.softmax(torch.randn(2, 3, h * w + 1), -1)  # the CLS query's row is ignored
    without = attention_distance(patches, (h, w), 16, num_prefix_tokens=0)
    with_prefix = attention_distance(with_cls, (h, w), 16, num_prefix_tokens=1)
    torch.testing.assert_close(with_prefix, without)
    assert (without > 0).all()


def test_distance_is_the_hand_computed_value_for_neighbour_attention():
    # a 1x3 grid, patch 10 px: every patch sends half its attention to itself and half to patch 0
    attn = torch.zeros(1, 1, 3, 3)
    for q in range(3):
        attn[0, 0, q, q] += 0.5
        attn[0, 0, q, 0] += 0.5
    d = mean_attention_distance(attn, (1, 3), patch_size=10, num_prefix_tokens=0)
    assert d.item() == pytest.approx((0 + 0.5 * 10 + 0.5 * 20) / 3)


def test_attention_of_the_wrong_token_count_is_rejected_naming_the_shapes():
    with pytest.raises(ValueError, match="T=10 tokens but the grid 3x3 with 0 prefix"):
        attention_distance(torch.rand(1, 2, 10, 10), (3, 3), 16, num_prefix_tokens=0)
    with pytest.raises(ValueError, match=r"\(B, heads, T, T\)"):
        attention_distance(torch.rand(2, 10, 10), (3, 3), 16, num_prefix_tokens=1)


def _synthetic_test_split(n):
    test = create_dataset("synthetic_shapes", "test", size=32, n_test=n)
    return test.with_transform(create_transform(test.info, 32, train=False))


def test_collecting_loop_gives_the_same_result_batched_and_unbatched():
    torch.manual_seed(0)
    model = create_model("deit_tiny", "random", num_outputs=0, img_size=32)
    test = _synthetic_test_split(7)
    batched = collect_attention_distance(model, test, num_images=5, batch_size=2)
    whole = collect_attention_distance(model, test, num_images=5, batch_size=5)
    assert batched.shape == (12, 3)  # DeiT-T: 12 blocks, 3 heads
    np.testing.assert_allclose(batched, whole, rtol=1e-6)
    # and it matches the pure function applied to all five images' attention at once
    x = torch.stack([test[i][0] for i in range(5)])
    maps = model.attention_maps(x)
    direct = np.stack([mean_attention_distance(a, (2, 2), 16, 1).numpy() for a in maps])
    np.testing.assert_allclose(batched, direct, rtol=1e-6)
    assert ((batched > 0) & (batched <= 16 * math.sqrt(2) + 1e-9)).all()  # a 2x2 grid of 16 px patches


def test_collecting_loop_refuses_a_model_without_attention():
    model = create_model("resnet18", "random", num_outputs=0)
    with pytest.raises(ValueError, match="has no attention"):
        collect_attention_distance(model, _synthetic_test_split(2), num_images=2)


def test_fig5_plans_backbone_and_finetuned_runs_for_each_vit_and_existing_init():
    params = load_params("smoke")
    runs = plan_fig5(params)
    # the smoke profile's in-domain DINO init is pretrained for DeiT-T: its pretraining comes first, once
    assert runs[0] == Run("pretrain_dino", "synthetic_shapes", "deit_tiny", "random+dino_indomain", 0)
    assert {r.experiment for r in runs[1:]} == {"attention", "attention_finetuned"}
    assert {r.model for r in runs} == {"deit_tiny"}  # the smoke profile's only ViT
    assert {r.init for r in runs} == {"random", "imagenet", "random+dino_indomain"}  # no DINO weights for DeiT-T
    assert {r.dataset for r in runs} == set(params.saliency_datasets)


def test_fig5_runs_store_distances_and_the_figure_shows_missing_checkpoints_with_their_reason(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medvit import figure_rows
    from medvit.plots.fig5 import fig5_figure, fig5_table

    params = load_params("smoke", results_dir=str(tmp_path), fig1_inits=["random"], attention_images=4)
    rows = figure_rows(params, "fig5")
    backbone = rows[rows["experiment"] == "attention"].iloc[0]
    assert backbone["status"] == "ok" and backbone["n_images"] == 4
    assert np.asarray(backbone["distances"]).shape == (12, 3)
    assert backbone["value"] == pytest.approx(np.mean(backbone["distances"]))
    finetuned = rows[rows["experiment"] == "attention_finetuned"].iloc[0]
    assert finetuned["status"] == "unavailable"
    assert "no checkpoint for finetune__synthetic_shapes" in finetuned["reason"]
    table = fig5_table(rows)
    assert len(table) == 12 * 3 and set(table["source"]) == {"backbone"}
    fig = fig5_figure(rows, inits=params.fig1_inits)
    text = " ".join(" ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text)).split())
    assert "unavailable: no checkpoint for" in text  # the reason, wrapped into the panel
    assert "deit_tiny random — backbone" in text and "n=4 images" in text
    plt.close(fig)
