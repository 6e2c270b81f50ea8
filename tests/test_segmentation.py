"""Fig 2 segmentation (docs/protocol.md §9): DeepLabV3 models, Dice/IoU, joint augmentation, datasets, the experiment."""
import matplotlib
import numpy as np
import pytest
import timm
import torch
from PIL import Image

from medvit import (DataError, ModelError, WeightsUnavailableError, create_dataset, create_model, load_params,
                    figure_rows)
from medvit.data.segmentation import SegmentationDataset, create_segmentation_transform, resized, segmentation_info
from medvit.models.segmentation import create_segmentation_model
from medvit.plots.fig2 import fig2_table, fig2_figure
from medvit.figures.fig2 import departures as segmentation_deviations, segmentation_examples
from medvit.segment import dice_iou_per_image, evaluate_segmentation, segmentation_metrics, trivial_baselines

matplotlib.use("Agg")


@pytest.mark.parametrize("name", ["resnet18", "deit_tiny"])
@pytest.mark.parametrize("channels", [1, 3])
def test_deeplab_mask_has_input_size_and_every_parameter_gets_a_gradient(name, channels):
    torch.manual_seed(0)
    model = create_segmentation_model(name, "random", in_chans=channels, img_size=32)
    x = torch.randn(2, channels, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 1, 32, 32)
    assert torch.isfinite(logits).all()
    logits.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad


def test_paper_backbones_resnet50_is_dilated_to_stride_8_and_deit_small_uses_the_patch_grid():
    x = torch.zeros(1, 3, 64, 64)
    resnet = create_segmentation_model("resnet50", "random", img_size=64).eval()
    deit = create_segmentation_model("deit_small", "random", img_size=64).eval()
    assert resnet.backbone.feature_map(x).shape == (1, 2048, 8, 8)  # output stride 8
    assert deit.backbone.feature_map(x).shape == (1, 384, 4, 4)  # 16-px patches, CLS dropped
    rates = [m.dilation[0] for m in resnet.head[0].convs.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(set(rates) - {1}) == [12, 24, 36]  # torchvision's ASPP rates
    with torch.no_grad():
        assert resnet(x).shape == deit(x).shape == (1, 1, 64, 64)


def test_resnet_backbone_is_dilated_to_output_stride_8_and_vits_refuse_a_stride():
    model = create_segmentation_model("resnet18", "random", in_chans=1, img_size=64)
    assert model.backbone.patch_size == 8
    assert model.backbone.feature_map(torch.zeros(1, 1, 64, 64)).shape[-2:] == (8, 8)
    with pytest.raises(ModelError, match="output_stride"):
        create_model("deit_tiny", "random", output_stride=8)


def test_pretrained_backbone_weights_come_from_the_registry_loader(tmp_path):
    source = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "resnet18.tv_in1k.pth"
    torch.save(source.state_dict(), path)
    model = create_segmentation_model("resnet18", "imagenet", weights_file=path, img_size=32)
    assert model.init == "imagenet"
    assert torch.equal(model.backbone.net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    with pytest.raises(WeightsUnavailableError):
        create_segmentation_model("resnet18", "imagenet", weights_file=tmp_path / "absent.pth")


def test_dice_and_iou_match_hand_computed_values_including_empty_masks():
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    true = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    dice, iou = dice_iou_per_image(pred.reshape(4, 2, 2), true.reshape(4, 2, 2))
    # image 0: |P∩T| = 1, |P| = |T| = 2, |P∪T| = 3; image 1: both empty (= 1 by convention);
    # image 2: empty truth, false positive (= 0); image 3: missed foreground (= 0)
    np.testing.assert_allclose(dice.numpy(), [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(iou.numpy(), [1 / 3, 1.0, 0.0, 0.0])
    m = segmentation_metrics(pred, true)
    assert m["dice"] == pytest.approx(1.5 / 4) and m["iou"] == pytest.approx((1 / 3 + 1) / 4)


def test_dice_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        dice_iou_per_image(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 4, 5, dtype=torch.bool))


def _l_shaped_mask(h=48, w=60):
    mask = np.zeros((h, w), dtype=bool)
    mask[h // 12:h * 5 // 6, w // 10:w * 3 // 10] = True  # a vertical bar on the left ...
    mask[h * 7 // 12:h * 5 // 6, w // 10:w * 3 // 4] = True  # ... with a foot: no flip maps it onto itself
    return mask


def _agree_off_the_border(painted: torch.Tensor, target: torch.Tensor) -> bool:
    """The painted image is foreground inside the mask and background outside, 2 px from its border
    (image and mask are resampled twice, bilinear vs nearest: their borders may differ by a pixel or so)."""
    t = target.float()[None, None]
    inside = torch.nn.functional.max_pool2d(-t, 5, 1, 2)[0, 0] == -1  # eroded mask
    near = torch.nn.functional.max_pool2d(t, 5, 1, 2)[0, 0].bool()  # dilated mask
    return bool(painted[inside].all() and not painted[~near].any())


def test_image_and_mask_stay_aligned_through_random_augmentation():
    mask = _l_shaped_mask(96, 120)
    image = np.repeat((mask * 255).astype(np.uint8)[:, :, None], 3, axis=2)  # the mask painted in
    info = segmentation_info("painted", 3, (0.5,) * 3, (0.25,) * 3, "test")
    tf = create_segmentation_transform(info, img_size=64, train=True, normalize=False)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        x, y = tf(image, mask)
        assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64)
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        painted = x.mean(0) > 0.5
        target = y[0].bool()
        assert _agree_off_the_border(painted, target)  # resampling may differ only on the border
        assert not _agree_off_the_border(painted, target.flip(-1))  # a flip of one alone would be caught
        seen.add(tuple(target.flatten().tolist()))
    assert len(seen) > 20  # the augmentation really varied


def test_eval_transform_normalises_the_image_only():
    mask = _l_shaped_mask()
    image = np.full((*mask.shape, 3), 128, dtype=np.uint8)
    info = segmentation_info("flat", 3, (0.5,) * 3, (0.25,) * 3, "test")
    x, y = create_segmentation_transform(info, img_size=32, train=False)(image, mask)
    assert torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-5)
    assert set(y.unique().tolist()) == {0.0, 1.0}


def test_ph2_loads_from_the_shared_data_with_a_fixed_split(shared_data):
    splits = {s: create_dataset("ph2", s, data_root=shared_data) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [140, 30, 30]
    ids = [{p.split("/")[-1] for p in splits[s].paths} for s in splits]
    assert len(set.union(*ids)) == 200
    x, y = splits["test"][0]
    assert x.dtype == torch.uint8 and x.shape[0] == 3 and y.shape == (1, *x.shape[1:])
    assert 0 < y.float().mean() < 1
    again = create_dataset("ph2", "test", data_root=shared_data)
    assert again.paths == splits["test"].paths
    base = trivial_baselines(splits["test"], img_size=32)
    assert base["all_background"]["dice"] == 0.0  # every PH2 image has a lesion
    assert 0 < base["all_foreground"]["dice"] < 1


def test_missing_folder_raises_data_error_naming_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match=r"nope.*_lesion\.png"):
        create_dataset("ph2", "train", root=tmp_path / "nope")
    with pytest.raises(DataError, match="ISIC2018_Task1_Training_GroundTruth"):
        create_dataset("isic2018_task1", "train", root=tmp_path)


def _write_isic2018(root, n=10, missing_mask=None):
    images = root / "ISIC2018_Task1-2_Training_Input"
    masks = root / "ISIC2018_Task1_Training_GroundTruth"
    images.mkdir(parents=True)
    masks.mkdir()
    (images / "LICENSE.txt").write_text("not an image")
    for i in range(n):
        Image.fromarray(np.full((20, 24, 3), 10 * i, dtype=np.uint8)).save(images / f"ISIC_{i:07d}.jpg")
        if i != missing_mask:
            Image.fromarray((_l_shaped_mask(20, 24) * 255).astype(np.uint8)).save(
                masks / f"ISIC_{i:07d}_segmentation.png")


def test_isic2018_task1_layout_loads_and_a_missing_mask_is_named(tmp_path):
    _write_isic2018(tmp_path / "ok")
    sizes = [len(create_dataset("isic2018_task1", s, root=tmp_path / "ok")) for s in ("train", "val", "test")]
    assert sizes == [8, 1, 1]
    x, y = create_dataset("isic2018_task1", "train", root=tmp_path / "ok")[0]
    assert y.dtype == torch.bool and torch.equal(y[0], torch.from_numpy(_l_shaped_mask(20, 24)))
    _write_isic2018(tmp_path / "bad", missing_mask=3)
    with pytest.raises(DataError, match="ISIC_0000003_segmentation.png"):
        create_dataset("isic2018_task1", "train", root=tmp_path / "bad")


def _write_seg_folder(root, masks, image_sizes=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, mask in enumerate(masks):
        h, w = image_sizes[i] if image_sizes else mask.shape
        painted = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize((w, h), Image.NEAREST))
        Image.fromarray(np.repeat(painted[:, :, None], 3, axis=2)).save(root / "images" / f"case{i}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"case{i}.png")


def test_resizing_once_keeps_each_mask_on_its_image_and_rejects_mismatched_sizes(tmp_path):
    masks = [_l_shaped_mask(60, 90), _l_shaped_mask(70, 50)[::-1].copy(), np.zeros((40, 40), dtype=bool)]
    _write_seg_folder(tmp_path / "ok", masks)
    raw = create_dataset("seg_folder", "train", root=tmp_path / "ok", val_size=0.1)
    small = resized(raw, 37)
    assert small.images.shape == (len(raw), 37, 37, 3) and small.masks.shape == (len(raw), 37, 37)
    for image, mask in zip(small.images, small.masks):
        assert _agree_off_the_border(torch.from_numpy(image.mean(-1) > 127), torch.from_numpy(mask))
    assert "ImageNet mean/std" in raw.info.description  # the generic folder says it is not the data's own
    _write_seg_folder(tmp_path / "bad", masks[:1], image_sizes=[(30, 45)])
    bad = create_dataset("seg_folder", "train", root=tmp_path / "bad", val_size=0.1)
    with pytest.raises(DataError, match=r"case0\.png.*differ|mask .*case0\.png"):
        resized(bad, 37)


def test_fig2_departures_name_size_epochs_and_synthetic_data():
    text = "\n".join(segmentation_deviations(load_params("smoke")))
    assert "SYNTHETIC" in text and "32 px instead of 224" in text and "BCE-with-logits" in text


def test_synthetic_segmentation_set_is_labelled_synthetic_and_masks_match_shapes():
    ds = create_dataset("synthetic_shapes_seg", "val", size=32, n_val=8)
    assert ds.info.synthetic and len(ds) == 8
    x, y = ds[0]
    bright = x.float().mean(0) > 120
    assert (bright == y[0]).float().mean() > 0.95


def test_fig2_experiment_trains_saves_checkpoints_and_draws_the_overlay_grid(tmp_path):
    params = load_params("smoke", results_dir=str(tmp_path), seg_train={"epochs": 1, "batch_size": 4},
                         dataset_options={"synthetic_shapes_seg": {"size": 32, "n_train": 8, "n_val": 4,
                                                                   "n_test": 4}})
    rows = figure_rows(params, "fig2")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"}
    for _, row in rows.iterrows():
        assert row["metric"] == "dice" and row["value"] == row["metrics"]["dice"]
        assert 0 <= row["metrics"]["iou"] <= row["metrics"]["dice"] <= 1  # IoU <= Dice per image
        assert row["best_epoch"] == 1 and set(row["baselines"]) == {"all_background", "all_foreground"}
    table = fig2_table(rows)
    assert list(table["model"]) == ["resnet18", "deit_tiny"]
    assert table["Dice"].str.match(r"0\.\d{3} \(n=1\)").all() and table["IoU"].str.match(r"0\.\d{3}").all()
    examples = segmentation_examples(params, "synthetic_shapes_seg", inits=("random", "imagenet"), n_images=3,
                                     skip_missing=True)
    assert list(examples.predictions) == ["resnet18 / random", "deit_tiny / random"]  # backbones side by side
    assert set(examples.missing) == {"resnet18 / imagenet", "deit_tiny / imagenet"}
    assert examples.images.shape == (3, 32, 32, 3) and examples.masks.shape == (3, 32, 32)
    assert all(p.shape == (3, 32, 32) and p.dtype == bool for p in examples.predictions.values())
    fig = fig2_figure(examples)
    assert fig.axes[0].get_title() == "image + ground truth" and len(fig.axes) == 3 * 3
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        segmentation_examples(params, "synthetic_shapes_seg", inits=("imagenet",))


@pytest.mark.parametrize("logit,baseline", [(10.0, "all_foreground"), (-10.0, "all_background")])
def test_evaluation_of_a_constant_predictor_equals_the_trivial_baseline(logit, baseline):
    ds = create_dataset("synthetic_shapes_seg", "test", size=32, n_test=7)

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 1, *x.shape[-2:]), logit)

    tf = create_segmentation_transform(ds.info, 32, train=False)
    m = evaluate_segmentation(Constant(), ds.with_transform(tf), batch_size=3)  # batches of 3, 3 and 1
    assert m == pytest.approx(trivial_baselines(ds, img_size=32)[baseline])
    assert 0 < trivial_baselines(ds, img_size=32)["all_foreground"]["dice"] < 0.5


def _solid_ph2_folder(root, n: int = 10):
    """A PH2-layout folder of ``n`` solid-colour 24×32 images, image i of grey level 20 * i (known stats)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((24, 32, 3), 20 * i, np.uint8)).save(root / "images" / f"IMD{i:03d}.png")
        mask = np.zeros((24, 32), np.uint8)
        mask[8:16, 8:24] = 255
        Image.fromarray(mask).save(root / "masks" / f"IMD{i:03d}_lesion.png")


def test_ph2_normalisation_is_computed_from_the_training_images_only(tmp_path):
    from medvit.data.split import authors_split

    _solid_ph2_folder(tmp_path)
    train_levels = np.array([20 * i for i in authors_split(10, 0.3)["train"]]) / 255
    splits = {s: create_dataset("ph2", s, root=tmp_path) for s in ("train", "val", "test")}
    for s in splits.values():  # every split is normalised with the training split's statistics
        assert s.info.mean == pytest.approx((train_levels.mean(),) * 3, abs=1e-4)
        assert s.info.std == pytest.approx((train_levels.std(),) * 3, abs=1e-4)
    all_levels = np.arange(10) * 20 / 255
    assert splits["test"].info.mean[0] != pytest.approx(all_levels.mean(), abs=1e-3)  # test images not included


def test_ph2_shared_data_mean_std_are_its_training_split_statistics(shared_data):
    from medvit.data.segmentation import channel_stats

    train = create_dataset("ph2", "train", data_root=shared_data)
    test = create_dataset("ph2", "test", data_root=shared_data)
    assert test.info.mean == train.info.mean and test.info.std == train.info.std
    assert (train.info.mean, train.info.std) == channel_stats(train)
    everything = channel_stats(SegmentationDataset(train.info, "all", paths=[*train.paths, *test.paths],
                                                   mask_paths=[*train.mask_paths, *test.mask_paths]))
    assert everything != (train.info.mean, train.info.std)
    assert all(0.3 < m < 0.9 for m in train.info.mean) and all(0.05 < s < 0.4 for s in train.info.std)
