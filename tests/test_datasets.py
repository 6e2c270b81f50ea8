"""Datasets (docs/protocol.md §2): real MedMNIST and ISIC files load offline, the authors' split is exact,
the paper's transforms give the right shapes, and bad input is one clear DataError naming what is wrong."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from medvit import DataError, DatasetInfo, ImageDataset, authors_split, create_dataset, create_transform, list_datasets
from medvit.data import resize_size
from medvit.data.synthetic import make_shapes


# --- the authors' split (docs/protocol.md §2 check values) ---------------------------------------------------

def test_split_matches_authors_first_indices_for_aptos_and_isic():
    aptos = authors_split(3662, 0.3)
    assert [len(aptos[s]) for s in ("train", "val", "test")] == [2564, 549, 549]
    assert aptos["val"][:5] == [2791, 2171, 1708, 2071, 1406]
    assert aptos["test"][:5] == [1490, 1713, 2516, 2279, 252]
    isic = authors_split(25331, 0.2)
    assert [len(isic[s]) for s in ("train", "val", "test")] == [20265, 2533, 2533]
    assert isic["val"][:5] == [19993, 22352, 7, 6495, 15314]
    assert isic["test"][:5] == [10529, 9719, 8588, 10447, 16931]


def test_split_is_a_partition_and_fixed():
    split = authors_split(557, 0.3)
    rows = split["train"] + split["val"] + split["test"]
    assert sorted(rows) == list(range(557))
    assert authors_split(557, 0.3) == split
    with pytest.raises(ValueError, match="val_size must be in"):
        authors_split(10, 1.5)


# --- real data, offline --------------------------------------------------------------------------------

def test_retinamnist_loads_real_npz_offline(shared_data, no_network):
    splits = {s: create_dataset("retinamnist", s, data_root=shared_data, size=28) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1080, 120, 400]
    info = splits["train"].info
    assert (info.task, info.num_outputs, info.channels, info.target_metric) == ("multiclass", 5, 3, "quadratic_kappa")
    assert not info.synthetic and len(info.class_names) == 5 and len(info.mean) == 3
    train = splits["train"]
    assert train.images.shape == (1080, 28, 28, 3) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [486, 128, 206, 194, 66]  # the README's train counts
    x, y = train[0]
    assert x.shape == (3, 28, 28) and x.dtype == torch.uint8 and 0 <= int(y) < 5


def test_breastmnist_is_binary_grayscale(shared_data, no_network):
    train = create_dataset("breastmnist", "train", data_root=shared_data)
    test = create_dataset("breastmnist", "test", data_root=shared_data)
    info = train.info
    assert (info.task, info.num_outputs, info.channels, info.target_metric) == ("binary", 1, 1, "roc_auc")
    assert (len(train), len(test)) == (546, 156)
    assert train.load_image(0).shape == (28, 28, 1)
    assert set(np.unique(train.labels)) == {0, 1}
    assert train.label_matrix().shape == (546, 1)


def test_isic_uda1_loads_real_images_with_authors_split(shared_data):
    csv = pd.read_csv(shared_data / "isic_uda1" / "metadata.csv")
    assert len(csv) == 557
    rows = authors_split(557, 0.3)
    for split in ("train", "val", "test"):
        ds = create_dataset("isic_uda1", split, data_root=shared_data)
        assert len(ds) == len(rows[split]) == {"train": 390, "val": 83, "test": 84}[split]
        expected = csv["benign_malignant"].iloc[rows[split]].map({"benign": 0, "malignant": 1}).to_numpy()
        np.testing.assert_array_equal(ds.labels, expected)
        assert ds.paths[0].endswith(f"{csv['image'].iloc[rows[split][0]]}.jpg")
    info = ds.info
    assert (info.task, info.num_outputs, info.channels, info.target_metric) == ("binary", 1, 3, "roc_auc")
    for i in range(3):
        img = ds.load_image(i)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) == 256  # the README: shorter side 256 px
    x, _ = ds.with_transform(create_transform(info, 32, train=False))[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


# --- bad input ---------------------------------------------------------------------------------------

def test_unknown_dataset_lists_registered_names():
    with pytest.raises(DataError, match="unknown dataset 'retina'") as err:
        create_dataset("retina", "train")
    for name in ("retinamnist", "breastmnist", "isic_uda1", "synthetic_shapes"):
        assert name in str(err.value)
    assert set(list_datasets("*mnist")) >= {"retinamnist", "breastmnist", "pneumoniamnist"}


def test_unknown_split_is_named():
    with pytest.raises(DataError, match="unknown split 'validation'; expected one of"):
        create_dataset("synthetic_shapes", "validation")


def test_bad_dataset_option_is_named():
    with pytest.raises(DataError, match=r"'synthetic_shapes' does not take options \['colour'\]"):
        create_dataset("synthetic_shapes", "train", colour="red")
    with pytest.raises(DataError, match="size 32 is not one of"):
        create_dataset("retinamnist", "train", size=32)
    with pytest.raises(DataError, match="num_classes must be in 2..5, got 9"):
        create_dataset("synthetic_shapes", "train", num_classes=9)


def test_missing_data_folder_is_named(tmp_path, monkeypatch):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match="file not found: .*no_such_folder/metadata.csv"):
        create_dataset("isic_uda1", "train", root=missing)
    monkeypatch.delenv("MEDVIT_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match=r"no data root given.*MEDVIT_DATA_ROOT"):
        create_dataset("isic_uda1", "train")


def write_isic_folder(folder, csv_rows: dict, images: dict[str, bytes] | None = None):
    (folder / "images").mkdir(parents=True)
    pd.DataFrame(csv_rows).to_csv(folder / "metadata.csv", index=False)
    for name, data in (images or {}).items():
        (folder / "images" / name).write_bytes(data)
    return folder


def test_csv_without_the_label_column_names_column_and_file(tmp_path):
    folder = write_isic_folder(tmp_path / "isic", {"image": ["a", "b"], "diagnosis": ["nevus", "melanoma"]})
    with pytest.raises(DataError, match=r"metadata.csv: missing column\(s\) \['benign_malignant'\]"):
        create_dataset("isic_uda1", "train", root=folder)


def test_unknown_label_value_is_named(tmp_path):
    folder = write_isic_folder(tmp_path / "isic", {"image": ["a", "b", "c"],
                                                   "benign_malignant": ["benign", "malignant", "indeterminate"]})
    with pytest.raises(DataError, match=r"label value\(s\) \['indeterminate'\] not in the expected classes"):
        create_dataset("isic_uda1", "train", root=folder)


def test_unreadable_and_missing_images_are_named(tmp_path):
    names = [f"img{i}" for i in range(10)]
    folder = write_isic_folder(tmp_path / "isic", {"image": names, "benign_malignant": ["benign"] * 10},
                               {f"{n}.jpg": b"this is not a JPEG" for n in names[:5]})
    ds = create_dataset("isic_uda1", "train", root=folder)
    for i, path in enumerate(ds.paths):
        stem = path.rsplit("/", 1)[-1]
        expected = "cannot read image" if stem[:-4] in names[:5] else "image file not found"
        with pytest.raises(DataError, match=f"{expected}.*{stem}"):
            ds[i]


def test_images_and_labels_must_agree():
    info = DatasetInfo("toy", "multiclass", 2, "accuracy", 1, (0.5,), (0.5,))
    with pytest.raises(DataError, match="4 images but 3 labels"):
        ImageDataset(info, "train", np.zeros(3, dtype=np.int64), images=np.zeros((4, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match="exactly one of images= or paths="):
        ImageDataset(info, "train", np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="mean/std need 3 values"):
        DatasetInfo("toy", "multiclass", 2, "accuracy", 3, (0.5,), (0.5,))


# --- synthetic shapes ----------------------------------------------------------------------------------

def test_synthetic_shapes_are_deterministic_labelled_and_localised():
    a = create_dataset("synthetic_shapes", "train", size=32, num_classes=4, n_train=40)
    b = create_dataset("synthetic_shapes", "train", size=32, num_classes=4, n_train=40)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.info.synthetic and "SYNTHETIC" in a.info.description
    assert set(np.unique(a.labels)) == {0, 1, 2, 3}
    images, labels, masks = make_shapes(40, 32, 4, 3, 0)
    np.testing.assert_array_equal(labels, a.labels)
    inside = images[masks].mean()
    outside = images[~np.broadcast_to(masks[..., None], images.shape)].mean()
    assert inside > outside + 80  # the shape is bright on a dark, noisy background
    test = create_dataset("synthetic_shapes", "test", size=32, num_classes=4, n_test=40)
    assert not np.array_equal(test.images, a.images)  # splits are drawn with different seeds


def test_label_matrix_is_one_hot_for_multiclass():
    ds = create_dataset("synthetic_shapes", "val", n_val=12)
    m = ds.label_matrix()
    assert m.shape == (12, 3)
    np.testing.assert_array_equal(m.argmax(1), ds.labels)
    np.testing.assert_array_equal(m.sum(1), 1)


# --- transforms (docs/protocol.md §3) ----------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("img_size", [32, 224])
def test_transform_output_shapes(channels, img_size):
    info = DatasetInfo("toy", "multiclass", 2, "accuracy", channels, (0.4,) * channels, (0.2,) * channels)
    img = np.random.default_rng(0).integers(0, 256, (28, 40, channels), dtype=np.uint8)
    for train in (True, False):
        x = create_transform(info, img_size, train=train)(img)
        assert x.shape == (channels, img_size, img_size) and x.dtype == torch.float32


def test_eval_transform_is_deterministic_and_normalises_with_dataset_stats():
    info = DatasetInfo("toy", "multiclass", 2, "accuracy", 3, (0.1, 0.2, 0.3), (0.5, 0.25, 0.125))
    tf = create_transform(info, 32, train=False)
    img = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    torch.testing.assert_close(tf(img), tf(img), rtol=0, atol=0)
    flat = np.full((28, 28, 3), 153, dtype=np.uint8)  # 0.6 after scaling
    x = tf(flat)
    expected = torch.tensor([(0.6 - 0.1) / 0.5, (0.6 - 0.2) / 0.25, (0.6 - 0.3) / 0.125])
    torch.testing.assert_close(x.mean((1, 2)), expected, rtol=1e-5, atol=1e-5)


def test_train_transform_is_random():
    info = DatasetInfo("toy", "multiclass", 2, "accuracy", 3, (0.5,) * 3, (0.25,) * 3)
    tf = create_transform(info, 32, train=True)
    img = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    torch.manual_seed(0)
    outputs = [tf(img) for _ in range(4)]
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


def test_resize_keeps_the_papers_ratio():
    assert resize_size(224) == 256 and resize_size(64) == 73 and resize_size(32) == 37
