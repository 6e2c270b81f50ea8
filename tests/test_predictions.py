"""Stored per-run test predictions and k-NN features (docs/protocol.md §15)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from medvit.predictions import (Features, features_path, load_features, load_predictions, predictions_path,
                                save_features, save_predictions)

RUN = "finetune__retinamnist__resnet50__random__r0"


def test_predictions_round_trip_next_to_the_results_store(tmp_path):
    labels = np.array([0, 2, 1, 4])
    scores = torch.softmax(torch.randn(4, 5), 1)
    path = save_predictions(tmp_path, RUN, labels, scores)
    assert path == tmp_path / "predictions" / f"{RUN}.npz" == predictions_path(tmp_path, RUN)
    got = load_predictions(tmp_path, RUN)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.scores, scores.numpy())
    got_labels, got_scores = got  # unpacks as a tuple
    assert got_scores.dtype == np.float32
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == [f"{RUN}.npz"]  # no temporary left


def test_a_rerun_replaces_the_stored_predictions(tmp_path):
    save_predictions(tmp_path, RUN, [0, 1], [[0.9, 0.1], [0.2, 0.8]])
    save_predictions(tmp_path, RUN, [1, 1], [[0.5, 0.5], [0.4, 0.6]])
    np.testing.assert_array_equal(load_predictions(tmp_path, RUN).labels, [1, 1])


def test_features_round_trip_and_bf16_is_stored_as_float32(tmp_path):
    train_x = torch.randn(10, 4, dtype=torch.bfloat16)
    train_y = np.eye(3)[np.arange(10) % 3]
    test_x, test_y = torch.randn(5, 4, dtype=torch.bfloat16), np.arange(5) % 3
    path = save_features(tmp_path, "knn__d__deit_small__dino__r0", train_x, train_y, test_x, test_y)
    assert path == features_path(tmp_path, "knn__d__deit_small__dino__r0") and path.parent.name == "features"
    got = load_features(tmp_path, "knn__d__deit_small__dino__r0")
    assert isinstance(got, Features) and got.train_x.dtype == np.float32
    np.testing.assert_array_equal(got.train_x, train_x.float().numpy())  # bf16 -> float32 is exact
    np.testing.assert_array_equal(got.train_y, train_y)
    np.testing.assert_array_equal(got.test_y, test_y)


def test_concurrent_writers_of_one_run_leave_one_complete_file(tmp_path):
    def write(i):
        save_predictions(tmp_path, RUN, np.full(2000, i), np.full((2000, 3), float(i)))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = load_predictions(tmp_path, RUN)
    assert len(set(got.labels.tolist())) == 1 and (got.scores == got.labels[0]).all()  # one writer's, whole
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == [f"{RUN}.npz"]


def test_missing_bad_and_mismatched_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"predictions/finetune__retinamnist.*\.npz"):
        load_predictions(tmp_path, RUN)
    with pytest.raises(FileNotFoundError, match="frozen features"):
        load_features(tmp_path, "knn__d__m__i__r0")
    with pytest.raises(ValueError, match="3 labels but 2 score rows"):
        save_predictions(tmp_path, RUN, [0, 1, 1], [[0.1], [0.2]])
    with pytest.raises(ValueError, match="cannot name a file"):
        save_predictions(tmp_path, "../escape", [0], [[0.1]])
    with pytest.raises(ValueError, match=r"train_y must be the \(N, C\) label matrix"):
        save_features(tmp_path, "knn__d__m__i__r0", np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), np.zeros(2))
    (tmp_path / "predictions" / f"{RUN}.npz").parent.mkdir(exist_ok=True)
    (tmp_path / "predictions" / f"{RUN}.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable stored file"):
        load_predictions(tmp_path, RUN)
