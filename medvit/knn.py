"""k-NN evaluation of frozen features (docs/protocol.md §6), as in DINO's ``knn_classifier``.

``knn_classify`` is pure tensors: L2-normalised features, cosine similarity, the top-k neighbours
each weighted by exp(sim / T), and per query the weighted mean of the neighbours' label vectors
(one-hot for multiclass, so its argmax is DINO's weighted vote and it sums to 1; 0/1 vectors for
binary and multilabel, the paper's score). The weights are computed as exp((sim - max sim) / T), the same
mean (the factor exp(max sim / T) cancels), so no T > 0 overflows float32 (exp(1 / 0.01) already does).
k is capped at the bank's size (:func:`k_used`). Queries go in chunks so a 200k bank × 50k queries fits a GPU.
``knn_evaluate`` extracts the features of a model over two datasets and scores the result;
``knn_sensitivity`` re-scores stored features over a grid of k and T (docs/protocol.md §15).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .metrics import compute_metrics
from .train import resolve_precision, uses_channels_last

PAPER_K, PAPER_T = 200, 0.1
DINO_K, DINO_T = 20, 0.07


def k_used(k: int, bank_size: int) -> int:
    """The number of neighbours that vote: k, or the whole bank when k exceeds it. Capped, not refused: one
    profile's k serves datasets (and training subsets) of every size, and DINO's k-NN caps the same way."""
    return min(k, bank_size)


@torch.no_grad()
def knn_classify(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 k: int = PAPER_K, temperature: float = PAPER_T, chunk_size: int = 4096) -> torch.Tensor:
    """Scores (Nq, C) for ``test_feats`` from the bank (``train_feats`` (N, D), ``train_labels`` (N, C)).

    ``train_labels`` is the (N, C) label matrix (one-hot for multiclass). Similarities are computed
    in the features' dtype (bf16 on a GPU is fine); weights and scores in float32, finite for every T > 0.
    """
    if train_labels.ndim != 2 or len(train_labels) != len(train_feats):
        raise ValueError(f"train_labels must be (N, C) with N={len(train_feats)}, got {tuple(train_labels.shape)}")
    k = k_used(k, len(train_feats))
    bank = F.normalize(train_feats, dim=1)
    labels = train_labels.to(device=bank.device, dtype=torch.float32)
    out = []
    for start in range(0, len(test_feats), chunk_size):
        q = F.normalize(test_feats[start:start + chunk_size].to(bank.device, bank.dtype), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # sorted: column 0 holds each query's largest similarity
        sim = sim.float()
        w = ((sim - sim[:, :1]) / temperature).exp()  # in (0, 1], the nearest neighbour's is 1: no overflow
        scores = torch.einsum("qk,qkc->qc", w, labels[idx]) / w.sum(1, keepdim=True)
        out.append(scores)
    return torch.cat(out) if out else torch.empty(0, labels.shape[1], device=bank.device)


def feature_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """The autocast dtype k-NN features are computed in on ``device`` (None: fp32); see :func:`extract_features`."""
    if amp is False:
        return None
    dtype = resolve_precision("auto", device).dtype
    return dtype or (torch.bfloat16 if amp else None)  # the CPU's autocast computes in bf16


@torch.inference_mode()
def extract_features(model, dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                     amp: bool | None = None, num_workers: int = 0, progress: bool = True) -> torch.Tensor:
    """Frozen features (N, D) of ``dataset`` (with its eval transform) from ``model.features``.

    By default (``amp=None``) features are computed in fine-tuning's precision for ``device``
    (``medvit.train.resolve_precision("auto", device)``: bf16 autocast on a GPU that has it natively, fp16 on
    one that does not, fp32 on the CPU) and kept in that dtype; ``amp=True`` forces autocast (bf16 on the CPU),
    ``False`` fp32. CNNs run channels_last on CUDA and the CPU, as in training (``medvit.train.uses_channels_last``).
    """
    device = torch.device(device)
    dtype = feature_dtype(device, amp)
    model = model.to(device).eval()
    memory_format = torch.channels_last if uses_channels_last(model, device) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    feats = []
    for x, _ in tqdm(loader, desc=f"features {dataset.info.name}/{dataset.split}", disable=not progress,
                     leave=False):
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            feats.append(model.features(x))
    return torch.cat(feats)


def knn_evaluate(model, train_ds, test_ds, k: int = PAPER_K, temperature: float = PAPER_T,
                 batch_size: int = 256, device: str | torch.device = "cpu", amp: bool | None = None,
                 num_workers: int = 0, progress: bool = True, extract=extract_features) -> dict:
    """k-NN metrics of a frozen ``model`` on ``test_ds`` with ``train_ds`` as the bank (docs/protocol.md §6).

    Both datasets must carry their eval transform. ``extract`` computes the features (e.g. a
    ``medvit.features.FeatureCache``'s). Returns ``{"metrics": {...}, "scores": (Nq, C),
    "train_features": (N, D), "test_features": (Nq, D)}`` (tensors on the CPU, features in the dtype they
    were computed in), so the run can store its features for :func:`knn_sensitivity`, and ``"k"``, the
    neighbours that voted (:func:`k_used`).
    """
    opts = dict(batch_size=batch_size, device=device, amp=amp, num_workers=num_workers, progress=progress)
    bank = extract(model, train_ds, **opts)
    queries = extract(model, test_ds, **opts)
    labels = torch.from_numpy(train_ds.label_matrix())
    scores = knn_classify(bank, labels, queries, k=k, temperature=temperature).cpu()
    return {"metrics": compute_metrics(test_ds.info.task, test_ds.labels, scores.numpy()), "scores": scores,
            "train_features": bank.cpu(), "test_features": queries.cpu(), "k": k_used(k, len(bank))}


SENSITIVITY_KS = (10, 20, 50, 100, 200)
SENSITIVITY_TEMPERATURES = (DINO_T, PAPER_T)


def knn_sensitivity(features, task: str, target_metric: str, ks=SENSITIVITY_KS,
                    temperatures=SENSITIVITY_TEMPERATURES) -> pd.DataFrame:
    """The k-NN target metric for every k in ``ks`` and T in ``temperatures``, from stored features.

    ``features`` is ``(train_x, train_y, test_x, test_y)`` as :func:`medvit.predictions.load_features`
    returns it (bank features, bank label matrix, query features, test labels). Each cell is
    :func:`knn_classify` then :func:`compute_metrics`, in float32. Columns: ``k``, ``temperature``,
    ``k_used`` (k capped at the bank size), ``bank`` (its size), ``bank_fraction`` (``k_used / bank``: a
    k near the bank size votes with a large part of the training set), ``metric``, ``value``.
    """
    train_x, train_y, test_x, test_y = features
    bank = torch.as_tensor(np.asarray(train_x), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.float32)
    queries = torch.as_tensor(np.asarray(test_x), dtype=torch.float32)
    out = []
    for k in ks:
        for temperature in temperatures:
            scores = knn_classify(bank, labels, queries, k=k, temperature=temperature).numpy()
            metrics = compute_metrics(task, test_y, scores)
            if target_metric not in metrics:
                raise ValueError(f"knn_sensitivity: target_metric {target_metric!r} is not a {task} metric; "
                                 f"expected one of {sorted(metrics)}")
            used = k_used(k, len(bank))
            out.append({"k": k, "temperature": temperature, "k_used": used, "bank": len(bank),
                        "bank_fraction": used / len(bank), "metric": target_metric,
                        "value": metrics[target_metric]})
    return pd.DataFrame(out)
