"""In-domain DINO in the grid: the pretraining runs once per dataset × backbone × start init, before every run
that starts from it (in the plan and in the launchers' waves), is not redone when its checkpoint exists, and a
change of its settings names a new checkpoint instead of reusing a stale one."""
from __future__ import annotations

import pytest
import torch

from medvit import load_params
from medvit.execution import execute_run, figure_rows, results_store
from medvit.experiments import settings_hash, waves
from medvit.figures import figure
from medvit.params import ParamsError
from medvit.runs import Run, split_pretraining
from medvit.experiments.inputs import pretrained_weights, pretraining_checkpoint

INIT = "random+dino_indomain"
TINY_DINO = {"epochs": 2, "batch_size": 16, "n_local_crops": 2, "out_dim": 128, "hidden_dim": 128,
             "bottleneck_dim": 32, "warmup_iters": 0}


def tiny(tmp_path, **overrides):
    """smoke, one backbone, random and random + in-domain DINO, fine-tuning and k-NN of one repetition."""
    values = dict(results_dir=str(tmp_path), repetitions=1, fig1_models=["deit_tiny"],
                  fig1_inits=["random", INIT], dino_datasets=["synthetic_shapes"], dino_models=["deit_tiny"],
                  dino=TINY_DINO, train={"epochs": 1})
    values.update(overrides)
    return load_params("smoke", **values)


def test_the_plan_puts_one_pretraining_before_the_runs_that_start_from_it(tmp_path):
    params = tiny(tmp_path, repetitions=3, fig1_models=["resnet18", "deit_tiny"])
    runs = figure("fig1").plan(params)
    pre = [r for r in runs if r.experiment == "pretrain_dino"]
    assert pre == [Run("pretrain_dino", "synthetic_shapes", "deit_tiny", INIT, 0)] and runs[0] == pre[0]
    # dino_models names deit_tiny only: resnet18 has no in-domain run; deit_tiny's 3 repetitions x 2 evaluations
    assert {(r.model, r.init) for r in runs if r.experiment != "pretrain_dino"} == {
        ("resnet18", "random"), ("deit_tiny", "random"), ("deit_tiny", INIT)}
    assert sum(r.init == INIT for r in runs) == 1 + 2 * 3
    # Figs 3-5 read the same pretraining: it is in their plans too, once
    for name in ("fig4", "fig5"):
        assert [r for r in figure(name).plan(params) if r.experiment == "pretrain_dino"] == pre
    # the launchers' waves, run by run: what starts from the pretraining comes after it, what reads a fine-tuned
    # checkpoint after that fine-tuning; every other run starts at once
    finetuned = Run("finetune", "synthetic_shapes", "deit_tiny", INIT, 0)
    shown = [[(r.experiment, r.init) for r in wave] for wave in waves(figure("fig5").plan(params) + [finetuned])]
    assert shown == [[("pretrain_dino", INIT), ("attention", "random"), ("attention_finetuned", "random")],
                     [("attention", INIT), ("finetune", INIT)],
                     [("attention_finetuned", INIT)]]


def test_in_domain_inits_need_their_datasets_and_are_not_for_segmentation():
    with pytest.raises(ParamsError, match="dino_datasets is empty"):
        load_params("smoke", fig1_inits=["random", INIT], dino_datasets=[])
    with pytest.raises(ParamsError, match="figures.fig2: inits names 'random\\+dino_indomain'"):
        figure("fig2").settings(load_params("smoke", figures={"fig2": {"inits": [INIT]}},
                                            dino_datasets=["synthetic_shapes"]))
    with pytest.raises(ParamsError, match="dino.img_size is not a setting"):
        load_params("smoke", dino={"img_size": 32})
    with pytest.raises(ParamsError, match="dino: DinoConfig.global_crop_scale"):
        load_params("smoke", dino={"global_crop_scale": [0.4, 1.5]})
    params = load_params("smoke", dino={"global_crop_scale": [0.5, 1]})
    assert params.dino.global_crop_scale == (0.5, 1.0) and params.dino.img_size == params.img_size


def test_fine_tuning_and_knn_start_from_the_pretraining_which_is_done_once(tmp_path, monkeypatch):
    from medvit.experiments import finetune, knn, pretrain_dino

    params = tiny(tmp_path)
    loaded = []
    real = finetune.create_model

    def spy(name, init="random", **kw):
        loaded.append((init, kw.get("weights_file")))
        return real(name, init, **kw)

    for executor in (finetune, knn, pretrain_dino):
        monkeypatch.setattr(executor, "create_model", spy)
    rows = figure_rows(params, "fig1")
    assert set(rows["status"]) == {"ok"} and len(rows) == 5
    pre, evaluations = split_pretraining(rows)
    assert len(pre) == 1 and len(evaluations) == 4
    history = pre.iloc[0]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(h["feature_std"] > 0 for h in history)
    path = pretraining_checkpoint(params, Run("pretrain_dino", "synthetic_shapes", "deit_tiny", INIT, 0))
    assert path.is_file() and pre.iloc[0]["checkpoint"] == path.name
    # the pretraining built the start init; the fine-tuning and k-NN of the in-domain init loaded its checkpoint
    assert ("random", None) in loaded and loaded.count((INIT, path)) == 2
    # the fine-tuned model's backbone started from the teacher: its patch embedding is the checkpoint's (before
    # fine-tuning moved it, the k-NN run, which does not train, used exactly these weights)
    teacher = torch.load(path, weights_only=True)["kept_backbone"]  # the kept teacher, which the init loads
    knn_model = real("deit_tiny", INIT, num_outputs=0, in_chans=3, img_size=32, weights_file=path)
    assert torch.equal(knn_model.net.patch_embed.proj.weight, teacher["patch_embed.proj.weight"])

    # a changed fine-tuning setting reruns the fine-tuning, not the pretraining
    stamp = path.stat().st_mtime_ns
    changed = tiny(tmp_path, train={"epochs": 2})
    rows = figure_rows(changed, "fig1")
    assert path.stat().st_mtime_ns == stamp
    assert len(results_store(changed).rows(history=True, run_ids=[pre.iloc[0]["run_id"]])) == 1  # one pretraining row, ever


def test_changed_dino_settings_name_a_new_checkpoint_and_make_dependents_stale(tmp_path):
    params = tiny(tmp_path)
    run = Run("finetune", "synthetic_shapes", "deit_tiny", INIT, 0)
    store = results_store(params)
    row = execute_run(run, params, store)
    assert row["status"] == "unavailable" and "run pretrain_dino__synthetic_shapes__deit_tiny" in row["reason"]
    with pytest.raises(Exception, match="no checkpoint under the current settings"):
        pretrained_weights(params, run)
    assert pretrained_weights(params, Run("finetune", "synthetic_shapes", "deit_tiny", "random", 0)) is None

    other = tiny(tmp_path, dino={**TINY_DINO, "epochs": 3})
    assert pretraining_checkpoint(other, run) != pretraining_checkpoint(params, run)
    assert settings_hash(other, run) != settings_hash(params, run)
    plain = Run("finetune", "synthetic_shapes", "deit_tiny", "random", 0)  # a random-init run does not read dino
    assert settings_hash(other, plain) == settings_hash(params, plain)


def test_pretraining_findings_say_whether_the_loss_fell_and_whether_the_teacher_collapsed():
    import pandas as pd

    from medvit.plots.fig1 import pretraining_findings

    def row(losses, stds):
        return {"status": "ok", "model": "deit_small", "dataset": "retinamnist", "epochs": len(losses), "n_train": 500,
                "history": [{"loss": a, "feature_std": b} for a, b in zip(losses, stds)]}

    healthy, collapsed = pretraining_findings(pd.DataFrame([row([8.0, 7.5], [0.04, 0.039]),
                                                            row([8.0, 8.2], [0.04, 0.001])]))
    assert "the loss fell (8.000 → 7.500)" in healthy and "**no collapse**" in healthy
    assert "the loss did not fall (8.000 → 8.200)" in collapsed and "**a collapse**" in collapsed
    assert pretraining_findings(pd.DataFrame([{**row([8.0], [0.04]), "status": "unavailable"}])) == []


def test_fig1_figure_gives_the_in_domain_init_a_slot_only_where_it_ran():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from medvit.plots.fig1 import fig1_figure

    rows = pd.DataFrame([{"experiment": e, "dataset": d, "model": m, "init": i, "repetition": 0, "status": "ok",
                          "metric": "roc_auc", "value": 0.6}
                         for e in ("finetune", "knn") for m in ("resnet50", "deit_small")
                         for d, i in (("retinamnist", "random"), ("breastmnist", "random"))]
                        + [{"experiment": e, "dataset": "retinamnist", "model": "deit_small", "init": INIT,
                            "repetition": 0, "status": "ok", "metric": "roc_auc", "value": 0.6} for e in ("finetune", "knn")])
    fig = fig1_figure(rows, inits=("random", INIT))
    ticks = {ax.get_title(): [t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes if ax.get_title()}
    assert ticks["retinamnist — fine-tuning"] == ["random", "random\n+ in-domain DINO"]
    assert ticks["breastmnist — k-NN"] == ["random"]
    plt.close(fig)
