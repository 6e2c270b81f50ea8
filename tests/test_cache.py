"""The resized image cache (medvit.data.cache): build once, reload without decoding, invalidate on change."""
import json
import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import medvit.data.cache as cache_module
from medvit.data import DataError, DatasetInfo, ImageDataset, cached, create_dataset, default_cache_dir

INFO = DatasetInfo(name="tiny", task="multiclass", num_outputs=3, target_metric="accuracy", channels=3,
                   mean=(0.5,) * 3, std=(0.25,) * 3)


def write_images(folder, n, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def files_dataset(tmp_path):
    paths = write_images(tmp_path / "images", 6)
    return ImageDataset(INFO, "train", labels=np.arange(6) % 3, paths=paths)


def count_decodes(monkeypatch):
    calls = []
    real = cache_module.decode_resized

    def counting(path, channels, size):
        calls.append(path)
        return real(path, channels, size)

    monkeypatch.setattr(cache_module, "decode_resized", counting)
    return calls


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cache was rebuilt: an image was decoded")

    monkeypatch.setattr(cache_module, "decode_resized", fail)
    monkeypatch.setattr(Image, "open", fail)


def test_real_isic_images_are_cached_then_reloaded_without_decoding(shared_data, tmp_path, monkeypatch):
    ds = create_dataset("isic_uda1", "val", data_root=shared_data)
    first = cached(ds, size=64, cache_dir=tmp_path, workers=0)
    assert first.images.shape == (len(ds), 64, 64, 3) and first.images.dtype == np.uint8
    np.testing.assert_array_equal(first.labels, ds.labels)
    assert first.info == ds.info and first.split == "val"
    forbid_decoding(monkeypatch)
    again = cached(ds, size=64, cache_dir=tmp_path, workers=0)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    x, y = again[5]
    assert x.shape == (3, 64, 64) and int(y) == int(ds.labels[5])


def test_cached_pixels_match_torchvision_resize_of_the_decoded_image(files_dataset, tmp_path):
    fast = cached(files_dataset, size=16, cache_dir=tmp_path, workers=0)
    for i in range(len(files_dataset)):
        original = torch.from_numpy(files_dataset.load_image(i).copy()).permute(2, 0, 1)
        reference = v2.Resize((16, 16), antialias=True)(original).permute(1, 2, 0).numpy()
        assert np.abs(reference.astype(int) - fast.load_image(i).astype(int)).max() <= 2


def test_transform_and_labels_are_kept(files_dataset, tmp_path):
    transform = lambda img: torch.tensor(img.shape)  # noqa: E731
    fast = cached(files_dataset.with_transform(transform), size=8, cache_dir=tmp_path, workers=0)
    assert fast.transform is transform
    assert fast[2][0].tolist() == [8, 8, 3] and int(fast[2][1]) == 2


def test_changed_file_rebuilds_the_cache(files_dataset, tmp_path, monkeypatch):
    cached(files_dataset, size=8, cache_dir=tmp_path, workers=0)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(files_dataset.paths[0])
    calls = count_decodes(monkeypatch)
    fast = cached(files_dataset, size=8, cache_dir=tmp_path, workers=0)
    assert len(calls) == len(files_dataset)
    assert (fast.load_image(0) == [255, 0, 0]).all()
    assert len(list((tmp_path / "tiny").glob("*.u8"))) == 1  # replaced, not duplicated


def test_unchanged_files_and_another_size_are_separate_caches(files_dataset, tmp_path, monkeypatch):
    cached(files_dataset, size=8, cache_dir=tmp_path, workers=0)
    calls = count_decodes(monkeypatch)
    cached(files_dataset, size=8, cache_dir=tmp_path, workers=0)
    assert calls == []
    assert cached(files_dataset, size=12, cache_dir=tmp_path, workers=0).images.shape == (6, 12, 12, 3)
    assert len(calls) == len(files_dataset)


def test_truncated_image_error_names_the_file_and_leaves_no_cache(files_dataset, tmp_path):
    bad = files_dataset.paths[3]  # a JPEG
    data = open(bad, "rb").read()
    open(bad, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        cached(files_dataset, size=8, cache_dir=tmp_path / "cache", workers=0)
    assert [p.name for p in (tmp_path / "cache" / "tiny").iterdir()] == []


def test_skip_unreadable_drops_the_image_and_its_label(files_dataset, tmp_path, caplog):
    bad = files_dataset.paths[4]
    open(bad, "wb").write(b"not an image")
    with caplog.at_level(logging.WARNING, logger="medvit.data.cache"):
        fast = cached(files_dataset, size=8, cache_dir=tmp_path, workers=0, skip_unreadable=True)
    assert bad in caplog.text
    assert len(fast) == 5 and fast.images.shape == (5, 8, 8, 3)
    assert fast.labels.tolist() == [0, 1, 2, 0, 2]  # label of image 4 (1) dropped
    np.testing.assert_array_equal(fast.images[4], cached_single(files_dataset.paths[5]))
    meta = json.loads(next((tmp_path / "tiny").glob("*.json")).read_text())
    assert [d["index"] for d in meta["dropped"]] == [4]
    with pytest.raises(DataError, match=f"1 unreadable image.*{bad}.*skip_unreadable=True"):
        cached(files_dataset, size=8, cache_dir=tmp_path, workers=0)  # the stored cache, without the flag


def cached_single(path):
    return cache_module.decode_resized(path, 3, 8)


def test_missing_file_is_named(files_dataset, tmp_path):
    missing = ImageDataset(INFO, "val", np.array([0]), paths=[str(tmp_path / "gone.png")])
    with pytest.raises(DataError, match="image file not found: .*gone.png"):
        cached(missing, size=8, cache_dir=tmp_path, workers=0)


def test_in_memory_arrays_are_passed_through(tmp_path):
    ds = ImageDataset(INFO, "test", np.zeros(4, np.int64), images=np.zeros((4, 28, 28, 3), np.uint8))
    assert cached(ds, cache_dir=tmp_path) is ds
    assert not any(tmp_path.iterdir())


def test_worker_pool_builds_the_same_cache_as_one_process(tmp_path):
    paths = write_images(tmp_path / "images", 70, size=(20, 20))
    ds = ImageDataset(INFO, "train", np.arange(70) % 3, paths=paths)
    one = cached(ds, size=8, cache_dir=tmp_path / "a", workers=0)
    pool = cached(ds, size=8, cache_dir=tmp_path / "b", workers=2)
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(pool.images))


def test_cache_pickles_as_its_file_not_its_pixels(files_dataset, tmp_path):
    fast = cached(files_dataset, size=32, cache_dir=tmp_path, workers=0)
    blob = pickle.dumps(fast.images)
    assert len(blob) < 1000 < fast.images.nbytes
    np.testing.assert_array_equal(pickle.loads(blob), fast.images)


def test_cache_dir_defaults_to_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVIT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MEDVIT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "medvit"


def test_native_size_needs_images_of_one_size(tmp_path):
    paths = write_images(tmp_path / "a", 2, size=(10, 10)) + write_images(tmp_path / "b", 1, size=(12, 10))
    ds = ImageDataset(INFO, "train", np.zeros(3, np.int64), paths=paths)
    with pytest.raises(DataError, match=r"img000.png: size \(10, 12, 3\) differs"):
        cached(ds, size=None, cache_dir=tmp_path / "cache", workers=0)
