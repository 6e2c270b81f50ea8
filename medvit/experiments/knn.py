"""k-NN evaluation (the paper's frozen-feature protocol): the backbone under its init, unchanged, its features
voted on by ``medvit.knn.knn_evaluate``; the test metric, the predictions and the features."""
from __future__ import annotations

from ..data import create_transform
from ..features import FeatureCache
from ..knn import knn_evaluate
from ..layout import Layout
from ..models import create_model
from ..params import Params
from ..predictions import save_features, save_predictions
from ..runs import DATA_SETTINGS, PRETRAIN_DINO, Experiment, Run
from ..train import seed_everything
from .inputs import load_splits, pretrained_weights


def knn_run(run: Run, params: Params, device) -> dict:
    """k-NN of the frozen backbone; the row's ``k`` is the neighbours that voted (the profile's ``knn_k``
    capped at the training split's size, ``medvit.knn.k_used``), ``k_requested`` the profile's."""
    splits = load_splits(params, run.dataset)
    info = splits["train"].info
    seed_everything(params.seed_for(run.repetition))
    model = create_model(run.model, run.init, num_outputs=0, in_chans=info.channels, img_size=params.img_size,
                         weights_file=pretrained_weights(params, run))
    tf = create_transform(info, params.img_size, train=False)
    layout = Layout.of(params)
    features = FeatureCache(layout.features_cache)  # extracted once per images × weights
    out = knn_evaluate(model, splits["train"].with_transform(tf), splits["test"].with_transform(tf),
                       k=params.knn_k, temperature=params.knn_temperature, device=device,
                       num_workers=params.num_workers, extract=features.extract)
    m = out["metrics"]
    save_predictions(layout.root, run.run_id, splits["test"].labels, out["scores"])
    save_features(layout.root, run.run_id, out["train_features"], splits["train"].label_matrix(), out["test_features"],
                  splits["test"].labels)
    return {"metric": info.target_metric, "value": m[info.target_metric], "metrics": m, "split": "test",
            "k": out["k"], "k_requested": params.knn_k, "temperature": params.knn_temperature,
            "n_train": len(splits["train"]),
            "n_params": sum(p.numel() for p in model.parameters())}


KNN = Experiment("knn", knn_run, settings=(*DATA_SETTINGS, "knn_k", "knn_temperature", "precision"),
                 needs=(PRETRAIN_DINO,))
