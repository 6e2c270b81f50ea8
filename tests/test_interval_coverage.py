"""How often the 95 % interval of ``medvit.stats.paired_gap`` holds the true gap with 3 repetitions per model
(docs/protocol.md §14): below 95 % when training randomness dominates, at or above it when it is absent.

The simulation: two models drawn from the same distribution, so the true gap CNN − ViT (the expected metric
over training runs and over the images' population) is exactly 0, and an interval covers when it holds 0.
Each run of a model has its own population accuracy p_r = 0.8 + 0.06·z (training randomness: the run-to-run
standard deviation of the metric is 0.06). On a test set of 200 images it is correct on image i when
√0.9·d_i + √0.1·e_ri < Φ⁻¹(p_r): d_i is the image's difficulty, shared by every run of both models (the
runs agree on which images are hard, as trained networks do), e_ri the run's own noise. The gap's standard
deviation from the runs is 0.06·√(2/3) = 0.049 and from the test set, runs fixed, about 0.015: training
randomness gives about 90 % of its variance. Scored as two-class accuracy; the bootstrap is the same for
every metric. Seeded; the test uses 500 resamples per interval (the page's intervals use 2,000) for speed.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from medvit.stats import paired_gap

N_IMAGES, REPETITIONS, ACCURACY, RUN_SD, SHARED_DIFFICULTY = 200, 3, 0.8, 0.06, 0.9


def simulated_runs(rng, labels, difficulty, run_sd: float) -> list[np.ndarray]:
    """One model's REPETITIONS runs as one-hot two-class scores on the test images."""
    runs = []
    for _ in range(REPETITIONS):
        threshold = norm.ppf(np.clip(ACCURACY + run_sd * rng.normal(), 1e-3, 1 - 1e-3))
        latent = np.sqrt(SHARED_DIFFICULTY) * difficulty + np.sqrt(1 - SHARED_DIFFICULTY) * rng.normal(size=len(labels))
        predicted = np.where(latent < threshold, labels, 1 - labels)
        runs.append(np.eye(2)[predicted])
    return runs


def coverage(run_sd: float, simulations: int, seed: int) -> float:
    """The fraction of simulated settings whose 95 % interval holds the true gap, 0."""
    rng = np.random.default_rng(seed)
    covered = 0
    for i in range(simulations):
        labels = rng.integers(0, 2, N_IMAGES)
        difficulty = rng.normal(size=N_IMAGES)
        cnn = simulated_runs(rng, labels, difficulty, run_sd)
        vit = simulated_runs(rng, labels, difficulty, run_sd)
        gap = paired_gap("multiclass", "accuracy", labels, cnn, vit, n_resamples=500, seed=i)
        covered += gap.low <= 0 <= gap.high
    return covered / simulations


def test_with_3_repetitions_the_interval_under_covers_when_training_randomness_dominates():
    # Measured (docs/protocol.md §14): 0.855 ± 0.004 with 500 resamples (8 seeds x 1,000 simulations: 0.834 to
    # 0.876), 0.866 ± 0.005 with 2,000 (4,000 simulations). With 1,000 simulations the Monte Carlo standard
    # deviation is 0.011: the band is 4 of them each side of 0.855, and its top is well below 0.95.
    assert 0.81 <= coverage(RUN_SD, simulations=1000, seed=0) <= 0.90


def test_without_training_randomness_the_interval_is_not_too_narrow():
    # Runs that differ only by their own noise on the images: the interval is conservative (measured 0.99).
    assert coverage(0.0, simulations=200, seed=1) >= 0.95
