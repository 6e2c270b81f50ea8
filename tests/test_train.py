"""Fine-tuning (docs/protocol.md §4): the synthetic set is learnable, the best-validation checkpoint's test
metrics are reported, a non-finite loss stops the run naming the step, and the learning rate follows
the linear warm-up from 1e-8 then per-iteration cosine decay to 1e-6."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import medvit
import medvit.train
from medvit import (TrainConfig, compute_metrics, create_dataset, create_model, create_transform, finetune,
                    seed_everything)
from medvit.train import predict, task_loss


class TinyNet(nn.Module):
    """A few-thousand-parameter classifier with the attributes ``finetune`` reads from a Backbone."""

    name, init, has_attention = "tinynet", "random", False

    def __init__(self, channels: int = 3, outputs: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, outputs)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class NaNFromStep(TinyNet):
    """Returns NaN logits from the ``bad_step``-th training forward pass (0-based) on."""

    def __init__(self, bad_step: int):
        super().__init__()
        self.bad_step, self.calls = bad_step, 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls > self.bad_step:
                return out * float("nan")
        return out


def shapes(split: str, n: int, size: int = 32):
    return create_dataset("synthetic_shapes", split, size=size, num_classes=3, **{f"n_{split}": n})


@pytest.fixture(scope="module")
def small_splits():
    return shapes("train", 64), shapes("val", 32), shapes("test", 32)


@pytest.mark.slow
def test_synthetic_shapes_are_learnable_by_a_short_finetune():
    """ResNet18 from scratch, 32 px, 10 epochs of 256 images (160 steps). Chance is accuracy 1/3 and
    quadratic κ 0 (3 balanced classes, 64 test images). We assert accuracy ≥ 0.6 and κ ≥ 0.4. The margin:
    0.6 is 4.5 binomial standard errors (0.059) above chance, so a model that learned nothing passes with
    probability < 1e-5. Measured over seeds 0-4 on 1 and 2 threads: accuracy 0.78-1.00, κ 0.85-1.00, the last
    epoch's loss 0.07-0.26 of the first; the bars (0.6, 0.4, 0.8) sit well below every one of them."""
    train, val, test = shapes("train", 256), shapes("val", 64), shapes("test", 64)
    seed_everything(0)
    model = create_model("resnet18", "random", num_outputs=3, img_size=32)
    config = TrainConfig(epochs=10, batch_size=16, lr=2e-3, warmup_iters=5)
    result = finetune(model, train, val, test, config, img_size=32, seed=0, progress=False)
    assert result.test_metrics["accuracy"] >= 0.6
    assert result.test_metrics["quadratic_kappa"] >= 0.4
    assert result.train_loss[-1] < 0.8 * result.train_loss[0]
    assert len(result.val_history) == 10 and 1 <= result.best_epoch <= 10


def test_finetune_reports_the_best_validation_epoch_test_metrics(small_splits, monkeypatch):
    """Validation κ is forced to 0.2, 0.9, 0.5 over three epochs: epoch 2 must be the one kept."""
    train, val, test = small_splits
    forced = iter([0.2, 0.9, 0.5])
    val_scores = []
    real_metrics = medvit.train.compute_metrics

    def metrics_with_forced_val(task, labels, scores):
        m = real_metrics(task, labels, scores)
        if labels is val.labels:
            val_scores.append(np.array(scores))
            m["quadratic_kappa"] = next(forced)
        return m

    monkeypatch.setattr(medvit.train, "compute_metrics", metrics_with_forced_val)
    model = TinyNet()
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, warmup_iters=0)
    # the slow path: its evaluation is ``predict`` with torchvision's eval transform, compared with below
    result = finetune(model, train, val, test, config, img_size=32, seed=0, progress=False, fast_path=False)

    assert (result.best_epoch, result.best_val) == (2, 0.9)
    assert [h["quadratic_kappa"] for h in result.val_history] == [0.2, 0.9, 0.5]
    eval_tf = create_transform(train.info, 32, train=False)
    # the model is left at the epoch-2 weights, not the last epoch's ...
    now_val = predict(model, val.with_transform(eval_tf))
    np.testing.assert_allclose(now_val, val_scores[1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(now_val, val_scores[2])
    # ... and the reported test metrics are those weights' test metrics
    expected = real_metrics("multiclass", test.labels, predict(model, test.with_transform(eval_tf)))
    assert result.test_metrics == pytest.approx(expected)


def test_nan_from_the_first_step_raises_naming_step_zero(small_splits):
    train, val, test = small_splits
    config = TrainConfig(epochs=2, batch_size=16)
    with pytest.raises(FloatingPointError, match=r"tinynet/random on synthetic_shapes: non-finite loss at step 0 "):
        finetune(NaNFromStep(0), train, val, test, config, img_size=32, progress=False)


def test_nan_later_raises_naming_the_step_and_epoch(small_splits):
    """4 steps per epoch: the 6th step (index 5) is in epoch 2."""
    train, val, test = small_splits
    config = TrainConfig(epochs=3, batch_size=16)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 5 \(epoch 2\)"):
        finetune(NaNFromStep(5), train, val, test, config, img_size=32, progress=False)


def test_an_absurd_learning_rate_stops_the_run_as_diverged(small_splits):
    """lr 1000 with no warm-up: the first epoch's mean loss is orders of magnitude above the first step's
    (an untrained model's, about ln 3), far past DIVERGED_FACTOR, though every loss is finite."""
    train, val, test = small_splits
    config = TrainConfig(epochs=2, batch_size=16, lr=1000.0, warmup_iters=0)
    with pytest.raises(medvit.train.TrainingDiverged,
                       match=r"^tinynet/random on synthetic_shapes: diverged: training loss \S+ at epoch 1, \S+× "
                             r"its start \(\S+, the untrained model's first step; the limit is 10×\)$"):
        finetune(TinyNet(), train, val, test, config, img_size=32, progress=False)


class RecordingAdam(torch.optim.Adam):
    """Adam that records every group's learning rate at each step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lrs: list[list[float]] = []
        RecordingAdam.last = self

    def step(self, closure=None):
        self.lrs.append([g["lr"] for g in self.param_groups])
        return super().step(closure)


def spec_lr(t: int, total: int, warmup: int, lr=1e-4, warmup_lr=1e-8, min_lr=1e-6) -> float:
    """docs/protocol.md §4: linear warm-up from 1e-8 over ``warmup`` iterations, then cosine to 1e-6."""
    if t < warmup:
        return warmup_lr + t * (lr - warmup_lr) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


@pytest.mark.parametrize("warmup_iters, max_fraction, expected_warmup", [(4, 1.0, 4), (500, 0.25, 5)])
def test_learning_rate_follows_warmup_then_cosine(small_splits, monkeypatch, warmup_iters, max_fraction,
                                                  expected_warmup):
    train, val, test = small_splits
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    config = TrainConfig(epochs=5, batch_size=16, warmup_iters=warmup_iters, warmup_max_fraction=max_fraction)
    result = finetune(TinyNet(), train, val, test, config, img_size=32, progress=False)
    total = 5 * (64 // 16)
    assert (result.iterations, result.warmup_iters) == (total, expected_warmup)
    lrs = RecordingAdam.last.lrs
    assert len(lrs) == total
    assert all(len(set(group_lrs)) == 1 for group_lrs in lrs)  # decay and no-decay groups move together
    for t in (0, 1, expected_warmup - 1, expected_warmup, total // 2, total - 1):
        assert lrs[t][0] == pytest.approx(spec_lr(t, total, expected_warmup), rel=1e-6), f"iteration {t}"
    assert lrs[0][0] == pytest.approx(1e-8)
    assert lrs[expected_warmup][0] == pytest.approx(1e-4)
    decay = [group_lrs[0] for group_lrs in lrs[expected_warmup:]]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # cosine decays every iteration


def test_weight_decay_skips_biases_and_one_dimensional_parameters(small_splits, monkeypatch):
    train, val, test = small_splits
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    model = TinyNet()
    finetune(model, train, val, test, TrainConfig(epochs=1, batch_size=16), img_size=32, progress=False)
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in RecordingAdam.last.param_groups}
    assert groups[1e-5] == {id(model.conv.weight), id(model.head.weight)}
    assert groups[0.0] == {id(model.conv.bias), id(model.head.bias)}


def test_effective_warmup_is_capped_by_the_fraction_of_all_iterations():
    assert TrainConfig().effective_warmup(100_000) == 500  # the authors' 500 iterations
    assert TrainConfig(warmup_max_fraction=0.1).effective_warmup(160) == 16  # RetinaMNIST, 10 epochs


def test_training_set_smaller_than_a_batch_is_rejected(small_splits):
    train, val, test = small_splits
    with pytest.raises(ValueError, match="64 training images < batch_size 128"):
        finetune(TinyNet(), train, val, test, TrainConfig(batch_size=128), img_size=32, progress=False)


def test_task_loss_is_cross_entropy_or_bce_with_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    assert task_loss("multiclass", logits, labels) == pytest.approx(
        float(nn.functional.cross_entropy(logits, labels)))
    one_logit, y = torch.tensor([[1.5], [-0.5]]), torch.tensor([1, 0])
    assert task_loss("binary", one_logit, y) == pytest.approx(
        float(nn.functional.binary_cross_entropy_with_logits(one_logit, y[:, None].float())))
    multi = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert task_loss("multilabel", logits[:, :2], multi) == pytest.approx(
        float(nn.functional.binary_cross_entropy_with_logits(logits[:, :2], multi)))


def test_finetune_metrics_are_computed_on_the_test_split(small_splits):
    train, val, test = small_splits
    result = finetune(TinyNet(), train, val, test, TrainConfig(epochs=1, batch_size=16), img_size=32,
                      progress=False)
    assert set(result.test_metrics) == set(compute_metrics("multiclass", [0, 1, 2], np.eye(3)))
    assert result.best_epoch == 1 and result.wall_time_s > 0


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_with_a_scaler_trains_on_cpu(small_splits, precision):
    train, val, test = small_splits
    result = finetune(TinyNet(), train, val, test, TrainConfig(epochs=2, batch_size=16), img_size=32,
                      precision=precision, progress=False)
    assert result.precision == precision and all(np.isfinite(result.train_loss))


def test_data_and_model_that_do_not_fit_are_named_before_the_first_step(small_splits):
    train, val, test = small_splits
    wrong_outputs = create_model("resnet18", "random", num_outputs=train.info.num_outputs + 2, in_chans=3)
    with pytest.raises(medvit.DataError, match=f"needs {train.info.num_outputs}"):
        finetune(wrong_outputs, train, val, test, TrainConfig(epochs=1, batch_size=16), img_size=32, progress=False)
    gray = create_model("resnet18", "random", num_outputs=train.info.num_outputs, in_chans=1)
    with pytest.raises(medvit.DataError, match="cannot take .* images \\(3 channel"):
        finetune(gray, train, val, test, TrainConfig(epochs=1, batch_size=16), img_size=32, progress=False)
