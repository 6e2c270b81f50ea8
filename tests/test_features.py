"""Frozen features are computed once per (images, weights, precision) and read back from the cache."""
from __future__ import annotations

import torch

from medvit import create_dataset, create_model, create_transform
from medvit.features import FeatureCache, weights_digest
from medvit.knn import knn_evaluate


def split(name: str, img_size: int = 32):
    ds = create_dataset("synthetic_shapes", name, size=32, num_classes=3, n_train=24, n_test=12)
    return ds.with_transform(create_transform(ds.info, img_size, train=False))


def model(seed: int):
    torch.manual_seed(seed)
    return create_model("resnet18", "random", num_outputs=0, img_size=32)


def test_features_are_extracted_once_per_images_and_weights(tmp_path):
    cache, train = FeatureCache(tmp_path), split("train")
    first = cache.extract(model(0), train, progress=False)
    assert (cache.hits, cache.misses) == (0, 1) and len(list(tmp_path.glob("*.pt"))) == 1
    again = cache.extract(model(0), train, progress=False)  # the same weights rebuilt from the same seed
    assert (cache.hits, cache.misses) == (1, 1) and torch.equal(first, again)
    cache.extract(model(1), train, progress=False)  # a random init of another seed: other weights
    cache.extract(model(0), split("train", img_size=48), progress=False)  # another transform
    cache.extract(model(0), split("test"), progress=False)  # other images
    assert (cache.hits, cache.misses) == (1, 4) and len(list(tmp_path.glob("*.pt"))) == 4


def test_weights_digest_ignores_the_memory_format_and_sees_one_changed_value():
    a, b = model(0), model(0)
    assert weights_digest(a) == weights_digest(b.to(memory_format=torch.channels_last))
    with torch.no_grad():
        w = next(b.parameters())
        w[(0,) * w.ndim] += 1e-3
    assert weights_digest(a) != weights_digest(b)


def test_a_truncated_cache_file_is_computed_again(tmp_path):
    cache, train = FeatureCache(tmp_path), split("train")
    first = cache.extract(model(0), train, progress=False)
    path = next(tmp_path.glob("*.pt"))
    path.write_bytes(path.read_bytes()[:100])
    assert torch.equal(cache.extract(model(0), train, progress=False), first) and cache.misses == 2
    assert torch.equal(cache.extract(model(0), train, progress=False), first) and cache.hits == 1


def test_knn_with_cached_features_equals_knn_without(tmp_path):
    train, test = split("train"), split("test")
    plain = knn_evaluate(model(0), train, test, k=5, progress=False)
    cache = FeatureCache(tmp_path)
    for _ in range(2):
        cached = knn_evaluate(model(0), train, test, k=5, progress=False, extract=cache.extract)
        assert torch.equal(cached["scores"], plain["scores"]) and cached["metrics"] == plain["metrics"]
    assert (cache.hits, cache.misses) == (2, 2)
