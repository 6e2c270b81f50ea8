"""k-NN on frozen features (docs/protocol.md §6): cosine similarity, top-k, exp(sim / T) weights, weighted vote
(multiclass) or weighted mean of label vectors (binary / multilabel)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvit import create_dataset, create_model, create_transform, extract_features, knn_classify, knn_evaluate


def brute_force_knn(bank, bank_labels, queries, k, temperature):
    """The protocol written out one query at a time in plain Python/NumPy."""
    bank, bank_labels, queries = (np.asarray(a, dtype=np.float64) for a in (bank, bank_labels, queries))
    scores = []
    for q in queries:
        sims = [float(q @ b) / (np.linalg.norm(q) * np.linalg.norm(b)) for b in bank]
        top = sorted(range(len(bank)), key=lambda j: -sims[j])[:k]
        weights = {j: math.exp(sims[j] / temperature) for j in top}
        total = sum(weights.values())
        votes = [sum(weights[j] * bank_labels[j][c] for j in top) / total for c in range(bank_labels.shape[1])]
        scores.append(votes)
    return np.array(scores)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_knn_recovers_separable_clusters(rng):
    centres = np.eye(4, 16) * 10
    labels = np.repeat(np.arange(4), 30)
    bank = centres[labels] + rng.normal(0, 1, (len(labels), 16))
    query_labels = np.repeat(np.arange(4), 10)
    queries = centres[query_labels] + rng.normal(0, 1, (len(query_labels), 16))
    scores = knn_classify(torch.tensor(bank, dtype=torch.float32), torch.eye(4)[labels],
                          torch.tensor(queries, dtype=torch.float32), k=20, temperature=0.1)
    assert scores.shape == (40, 4)
    assert (scores.argmax(1).numpy() == query_labels).mean() == 1.0


@pytest.mark.parametrize("k, temperature", [(200, 0.1), (20, 0.07), (7, 0.5)])
def test_knn_multiclass_matches_brute_force(rng, k, temperature):
    bank = rng.normal(size=(250, 12))
    labels = rng.integers(0, 5, 250)
    onehot = np.eye(5)[labels]
    queries = rng.normal(size=(30, 12))
    scores = knn_classify(torch.tensor(bank), torch.tensor(onehot), torch.tensor(queries), k=k,
                          temperature=temperature).numpy()
    expected = brute_force_knn(bank, onehot, queries, k, temperature)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-6)  # class weights normalised = probabilities
    assert (scores.argmax(1) == expected.argmax(1)).all()  # the weighted vote


def test_knn_multilabel_and_binary_match_brute_force(rng):
    bank = rng.normal(size=(120, 8))
    multilabel = (rng.random((120, 6)) < 0.3).astype(np.float32)
    queries = rng.normal(size=(25, 8))
    scores = knn_classify(torch.tensor(bank), torch.tensor(multilabel), torch.tensor(queries), k=15,
                          temperature=0.1).numpy()
    np.testing.assert_allclose(scores, brute_force_knn(bank, multilabel, queries, 15, 0.1), rtol=1e-5, atol=1e-7)
    assert ((scores >= 0) & (scores <= 1)).all()

    binary = multilabel[:, :1]  # binary: one 0/1 column, the score is the weighted fraction of positives
    scores = knn_classify(torch.tensor(bank), torch.tensor(binary), torch.tensor(queries), k=15,
                          temperature=0.1).numpy()
    np.testing.assert_allclose(scores, brute_force_knn(bank, binary, queries, 15, 0.1), rtol=1e-5, atol=1e-7)


def test_knn_chunking_does_not_change_scores(rng):
    bank = torch.tensor(rng.normal(size=(300, 16)), dtype=torch.float32)
    labels = torch.eye(3)[torch.tensor(rng.integers(0, 3, 300))]
    queries = torch.tensor(rng.normal(size=(103, 16)), dtype=torch.float32)
    whole = knn_classify(bank, labels, queries, k=50, chunk_size=4096)
    for chunk in (1, 10, 64):
        torch.testing.assert_close(knn_classify(bank, labels, queries, k=50, chunk_size=chunk), whole)


def test_knn_with_k_larger_than_bank_uses_the_whole_bank(rng):
    bank = rng.normal(size=(9, 4))
    labels = np.eye(3)[rng.integers(0, 3, 9)]
    queries = rng.normal(size=(5, 4))
    scores = knn_classify(torch.tensor(bank), torch.tensor(labels), torch.tensor(queries), k=200,
                          temperature=0.1).numpy()
    np.testing.assert_allclose(scores, brute_force_knn(bank, labels, queries, 9, 0.1), rtol=1e-5, atol=1e-7)


def test_knn_rejects_labels_that_are_not_a_label_matrix():
    with pytest.raises(ValueError, match=r"train_labels must be \(N, C\)"):
        knn_classify(torch.randn(10, 4), torch.zeros(10, dtype=torch.long), torch.randn(2, 4))


def test_knn_evaluate_scores_a_frozen_model_end_to_end():
    train = create_dataset("synthetic_shapes", "train", size=32, n_train=48)
    test = create_dataset("synthetic_shapes", "test", size=32, n_test=16)
    tf = create_transform(train.info, img_size=32, train=False)
    model = create_model("resnet18", "random", num_outputs=0)
    out = knn_evaluate(model, train.with_transform(tf), test.with_transform(tf), k=10, temperature=0.1,
                       progress=False)
    assert out["scores"].shape == (16, 3)
    assert set(out["metrics"]) >= {"quadratic_kappa", "accuracy"}
    # the scores are knn_classify over the features the model gives
    bank = extract_features(model, train.with_transform(tf), progress=False)
    queries = extract_features(model, test.with_transform(tf), progress=False)
    assert bank.shape == (48, 512)
    expected = knn_classify(bank, torch.from_numpy(train.label_matrix()), queries, k=10, temperature=0.1)
    torch.testing.assert_close(out["scores"], expected)


def test_knn_evaluate_returns_the_features_it_scored():
    train = create_dataset("synthetic_shapes", "train", size=32, n_train=24)
    test = create_dataset("synthetic_shapes", "test", size=32, n_test=8)
    tf = create_transform(train.info, img_size=32, train=False)
    model = create_model("resnet18", "random", num_outputs=0)
    out = knn_evaluate(model, train.with_transform(tf), test.with_transform(tf), k=5, progress=False)
    assert out["train_features"].shape == (24, 512) and out["test_features"].shape == (8, 512)
    again = knn_classify(out["train_features"], torch.from_numpy(train.label_matrix()), out["test_features"], k=5)
    torch.testing.assert_close(again, out["scores"])


def test_knn_sensitivity_matches_brute_force_on_every_k_and_temperature(rng):
    from medvit import compute_metrics
    from medvit.knn import knn_sensitivity

    bank = rng.normal(size=(60, 8))
    bank_labels = rng.integers(0, 3, 60)
    bank[:, 0] += bank_labels * 1.5  # some signal, so the metric moves with k and T
    test_labels = rng.integers(0, 3, 25)
    queries = rng.normal(size=(25, 8))
    queries[:, 0] += test_labels * 1.5
    features = (bank, np.eye(3)[bank_labels], queries, test_labels)
    table = knn_sensitivity(features, "multiclass", "quadratic_kappa", ks=(5, 20, 100), temperatures=(0.07, 0.5))
    assert list(table["k"]) == [5, 5, 20, 20, 100, 100] and list(table["temperature"]) == [0.07, 0.5] * 3
    assert list(table["k_used"]) == [5, 5, 20, 20, 60, 60] and table["bank"].eq(60).all()
    for r in table.itertuples():
        expected = compute_metrics("multiclass", test_labels,
                                   brute_force_knn(bank, np.eye(3)[bank_labels], queries, r.k_used, r.temperature))
        assert r.value == pytest.approx(expected["quadratic_kappa"], abs=1e-9)
    assert table["value"].nunique() > 1


def test_knn_sensitivity_from_stored_features_of_a_multilabel_run(rng, tmp_path):
    from medvit import compute_metrics
    from medvit.knn import knn_sensitivity
    from medvit.predictions import load_features, save_features

    bank = torch.tensor(rng.normal(size=(40, 6)), dtype=torch.bfloat16)  # as a GPU run extracts them
    labels = (rng.random((40, 4)) < 0.4).astype(np.float32)
    queries = torch.tensor(rng.normal(size=(12, 6)), dtype=torch.bfloat16)
    test_labels = (rng.random((12, 4)) < 0.4).astype(int)
    save_features(tmp_path, "knn__x__deit_small__dino__r0", bank, labels, queries, test_labels)
    stored = load_features(tmp_path, "knn__x__deit_small__dino__r0")
    table = knn_sensitivity(stored, "multilabel", "roc_auc", ks=(10,), temperatures=(0.1,))
    expected = compute_metrics("multilabel", test_labels,
                               brute_force_knn(bank.float().numpy(), labels, queries.float().numpy(), 10, 0.1))
    assert table["value"].iloc[0] == pytest.approx(expected["roc_auc"], abs=1e-9)
    with pytest.raises(ValueError, match="'quadratic_kappa' is not a multilabel metric"):
        knn_sensitivity(stored, "multilabel", "quadratic_kappa", ks=(10,), temperatures=(0.1,))


@pytest.mark.parametrize("temperature", [0.01, 0.001])
def test_knn_vote_is_finite_at_temperatures_where_exp_overflows_float32(rng, temperature):
    from scipy.special import softmax

    bank = rng.normal(size=(200, 16))
    labels = np.eye(4)[rng.integers(0, 4, 200)]
    queries = bank[:30] + rng.normal(0, 0.01, (30, 16))  # each query next to one bank image: similarity ~1
    scores = knn_classify(torch.tensor(bank), torch.tensor(labels), torch.tensor(queries), k=15,
                          temperature=temperature).numpy()

    sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (bank / np.linalg.norm(bank, axis=1)[:, None]).T
    assert sims.max() / temperature > np.log(np.finfo(np.float32).max)  # exp(sim / T) itself overflows float32
    top = np.argsort(-sims, axis=1)[:, :15]
    weights = softmax(np.take_along_axis(sims, top, axis=1) / temperature, axis=1)  # float64, normalised
    expected = np.einsum("qk,qkc->qc", weights, labels[top])
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-6)
    assert (scores.argmax(1) == labels[:30].argmax(1)).all()  # the nearest image's class wins at a low T


def test_knn_evaluate_reports_the_k_that_voted(rng):
    train = create_dataset("synthetic_shapes", "train", size=32, n_train=12)
    test = create_dataset("synthetic_shapes", "test", size=32, n_test=4)
    tf = create_transform(train.info, img_size=32, train=False)
    model = create_model("resnet18", "random", num_outputs=0)
    out = knn_evaluate(model, train.with_transform(tf), test.with_transform(tf), k=10000, progress=False)
    assert out["k"] == 12
    assert knn_evaluate(model, train.with_transform(tf), test.with_transform(tf), k=5, progress=False)["k"] == 5


def test_a_knn_row_records_the_k_used_and_the_k_requested(tmp_path):
    from medvit import load_params
    from medvit.execution import execute_run, results_store
    from medvit.runs import Run

    params = load_params("smoke", knn_k=10000, results_dir=str(tmp_path),
                         dataset_options={"synthetic_shapes": {"size": 32, "n_train": 24, "n_val": 8, "n_test": 8}})
    row = execute_run(Run("knn", "synthetic_shapes", "resnet18", "random", 0), params, results_store(params),
                      device="cpu")
    assert row["status"] == "ok"
    assert (row["k"], row["k_requested"], row["n_train"]) == (24, 10000, 24)
