"""Fig 1 / Fig 3 pages: the DINO caveat beside the paper's numbers, the verdict tables and the k-NN sensitivity
table, from a results store with stored predictions and features (docs/protocol.md §13–§15)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from medvit import compute_metrics
from medvit.knn import knn_classify, knn_sensitivity
from medvit.plots.fig1 import fig1_figure, fig1_table, fig1_verdicts, knn_sensitivity_table
from medvit.plots.fig3 import fig3_table, fig3_verdicts
from medvit.predictions import load_features, save_features, save_predictions
from medvit.results import ResultsStore
from medvit.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED


def _noisy_probs(rng, labels, signal, classes=5):
    logits = rng.normal(size=(len(labels), classes))
    logits[np.arange(len(labels)), labels] += signal
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    """Fine-tuning runs on aptos2019 (a paper dataset) for ResNet50 / DeiT-S × random / ImageNet / DINO, 2
    repetitions, with predictions; k-NN runs with stored features."""
    rng = np.random.default_rng(0)
    s = ResultsStore(tmp_path)
    labels = rng.integers(0, 5, 300)
    signal = {("resnet50", "random"): 3.0, ("deit_small", "random"): 0.5, ("resnet50", "imagenet"): 2.0,
              ("deit_small", "imagenet"): 2.0, ("resnet50", "dino"): 2.0, ("deit_small", "dino"): 2.0}
    for (model, init), q in signal.items():
        for rep in range(2):
            if init == "random":
                scores = _noisy_probs(rng, labels, q)
            else:  # pretrained: every run of both models gives the same predictions (on par, exactly)
                scores = _noisy_probs(np.random.default_rng(1), labels, q)
            m = compute_metrics("multiclass", labels, scores)
            run_id = s.append({"experiment": "finetune", "dataset": "aptos2019", "model": model, "init": init,
                               "repetition": rep, "status": "ok", "metric": "quadratic_kappa",
                               "value": m["quadratic_kappa"], "metrics": m}).parent.name
            save_predictions(tmp_path, run_id, labels, scores)
    bank_labels = rng.integers(0, 5, 80)
    bank = rng.normal(size=(80, 16)) + np.eye(5, 16)[bank_labels] * 2
    queries = rng.normal(size=(300, 16)) + np.eye(5, 16)[labels] * 2
    for model in ("resnet50", "deit_small"):
        scores = knn_classify(torch.tensor(bank), torch.eye(5)[bank_labels], torch.tensor(queries), k=200).numpy()
        m = compute_metrics("multiclass", labels, scores)
        run_id = s.append({"experiment": "knn", "dataset": "aptos2019", "model": model, "init": "imagenet",
                           "repetition": 0, "status": "ok", "metric": "quadratic_kappa", "value": m["quadratic_kappa"],
                           "metrics": m, "k": 200, "temperature": 0.1}).parent.name
        save_predictions(tmp_path, run_id, labels, scores)
        if model == "resnet50":
            save_features(tmp_path, run_id, bank, np.eye(5)[bank_labels], queries, labels)
    return s


def test_fig1_table_shows_the_dino_caveat_and_no_difference_across_inits(store):
    table = fig1_table(store.rows()).set_index(["evaluation", "model", "init"])
    dino = table.loc[("fine-tuning", "resnet50", "DINO")]
    assert dino["paper"] == "0.894 ± 0.008"
    assert "DINO on the target dataset" in dino["caveat"] and "off-the-shelf" in dino["caveat"]
    assert dino["ours − paper"] == ""  # the paper's DINO is another init: no difference is computed
    imagenet = table.loc[("fine-tuning", "resnet50", "ImageNet")]
    assert imagenet["caveat"] == "" and imagenet["ours − paper"].startswith(("+", "-"))


def test_fig1_figure_draws_the_paper_dino_hollow_and_prints_the_caveat(store):
    fig = fig1_figure(store.rows())
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "DINO on the target dataset" in texts and "off-the-shelf" in texts
    hollow = [line for ax in fig.axes for line in ax.lines if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 2  # ResNet50 and DeiT-S, fine-tuning on APTOS2019
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "paper (other init)" in legend and "paper" in legend
    no_dino = fig1_figure(store.rows(), inits=("random", "imagenet"))
    assert not any("DINO" in t.get_text() for t in no_dino.texts)


def test_fig1_verdicts_give_gap_interval_n_and_verdict(store):
    table = fig1_verdicts(store.rows(), store.root, n_resamples=300)
    assert list(table.columns) == ["evaluation", "dataset", "init", "CNN − ViT", "metric", "gap", "95% CI", "n",
                                   "claim", "verdict", "note"]
    by = table.set_index(["evaluation", "init"])
    scratch = by.loc[("fine-tuning", "random")]
    assert scratch["verdict"] == SUPPORTED and scratch["CNN − ViT"] == "resnet50 − deit_small"
    assert scratch["n"] == "300 images × 2/2 runs" and scratch["gap"].startswith("+")
    lo, hi = (float(v) for v in scratch["95% CI"].strip("[]").split(", "))
    assert 0 < lo < float(scratch["gap"]) < hi
    on_par = by.loc[("fine-tuning", "ImageNet")]
    assert on_par["gap"] == "+0.000" and on_par["verdict"] == SUPPORTED and "(|gap| ≤ 0.02)" in on_par["claim"]
    knn = by.loc[("k-NN", "ImageNet")]
    assert knn["verdict"] == SUPPORTED and knn["n"] == "300 images × 1/1 runs"
    assert set(table["verdict"]) <= {SUPPORTED, CONTRADICTED, INCONCLUSIVE}


def test_fig3_verdicts_take_every_size_pair_present(store):
    table = fig3_verdicts(store.rows()[lambda r: r["experiment"] == "finetune"], store.root, n_resamples=200)
    assert set(table["CNN − ViT"]) == {"resnet50 − deit_small"}  # the other sizes have no runs here
    assert fig3_table(store.rows()[lambda r: r["experiment"] == "finetune"]).shape[0] == 6


def test_knn_sensitivity_table_from_stored_features(store):
    table = knn_sensitivity_table(store.rows(), store.root, ks=(10, 200), temperatures=(0.07, 0.1))
    by = table.set_index("model")
    resnet = by.loc["resnet50"]
    assert resnet["bank"] == 80 and resnet["run's k, T"] == "200, 0.1" and resnet["repetitions"] == 1
    run_id = "knn__aptos2019__resnet50__imagenet__r0"
    direct = knn_sensitivity(load_features(store.root, run_id), "multiclass", "quadratic_kappa", ks=(10, 200),
                             temperatures=(0.07, 0.1)).set_index(["k", "temperature"])["value"]
    assert resnet["k=10, T=0.07"] == f"{direct[(10, 0.07)]:.3f}"
    assert resnet["k=200, T=0.1"] == f"{direct[(200, 0.1)]:.3f}"
    assert float(resnet["k=200, T=0.1"]) == pytest.approx(
        store.rows().set_index("run_id").loc[run_id, "value"], abs=5e-4)  # the run's own setting, re-scored
    assert by.loc["deit_small", "note"] == "no stored features for knn__aptos2019__deit_small__imagenet__r0"


def test_tables_of_an_empty_store_are_empty(tmp_path):
    assert fig1_verdicts(pd.DataFrame(), tmp_path).empty
    assert knn_sensitivity_table(pd.DataFrame(), tmp_path).empty
