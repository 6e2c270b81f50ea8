"""Parameters are data (DESIGN "What medvit takes" 5): every profile loads into the frozen Params, unknown or
mistyped keys are one error naming the key and the file, None overrides keep the profile, the hash tracks values."""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from medvit import Params, ParamsError, list_profiles, load_params
from medvit.execution import grid_runs
from medvit.figures import check_sections, fig3, fig4
from medvit.params import params_dir


def test_every_profile_loads():
    profiles = list_profiles()
    assert {"smoke", "quick", "medmnist", "paper"} <= set(profiles)
    for name in profiles:
        params = load_params(name)
        assert params.profile == name and params.description
        assert re.fullmatch(r"[0-9a-f]{12}", params.hash)
        raw = yaml.safe_load((params_dir() / f"{name}.yaml").read_text())
        for key, value in raw.items():  # every value in the file is what the Params holds
            held = params.to_dict()[key]
            if isinstance(value, dict) and key in ("train", "seg_train", "dino", "slurm"):
                held = {k: held[k] for k in value}  # a nested mapping states some keys; the rest are the protocol's
            assert held == value, f"{name}: {key}"


def test_profile_values_have_the_declared_types():
    for name in list_profiles():
        params = load_params(name)
        assert isinstance(params.datasets, tuple) and all(isinstance(d, str) for d in params.datasets)
        assert isinstance(params.train.lr, float) and isinstance(params.train.epochs, int)


def write_profile(tmp_path, text: str):
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return path


def test_unknown_key_in_a_profile_names_key_and_file(tmp_path):
    path = write_profile(tmp_path, "description: x\ntrain: {epochs: 3}\nwarmup_iterations: 10\n")
    with pytest.raises(ParamsError, match="unknown parameter 'warmup_iterations'") as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_unknown_override_is_named():
    with pytest.raises(ParamsError, match="override: unknown parameter 'epoch'"):
        load_params("smoke", epoch=3)


@pytest.mark.parametrize("text, key", [("train: {epochs: ten}\n", "epochs"), ("train: {epochs: true}\n", "epochs"),
                                       ("train: {lr: fast}\n", "lr"), ("train: 3\n", "train"), ("datasets: retinamnist\n", "datasets"),
                                       ("compile: 1\n", "compile")])
def test_wrong_type_names_the_key_and_file(tmp_path, text, key):
    path = write_profile(tmp_path, text)
    with pytest.raises(ParamsError, match=f"{key}=") as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_wrong_type_override_names_the_key():
    with pytest.raises(ParamsError, match=r"override: train.epochs='3' should be"):
        load_params("smoke", train={"epochs": "3"})


def test_none_overrides_keep_the_profile_values():
    raw = yaml.safe_load((params_dir() / "smoke.yaml").read_text())
    params = load_params("smoke", train=None, img_size=None, datasets=None)
    assert params.train.epochs == raw["train"]["epochs"] and params.img_size == raw["img_size"]
    assert list(params.datasets) == raw["datasets"]
    assert params == load_params("smoke")


def test_overrides_replace_profile_values_with_coercion():
    params = load_params("smoke", train={"epochs": 5, "lr": 1}, datasets=["retinamnist"])
    assert (params.train.epochs, params.train.lr, params.datasets) == (5, 1.0, ("retinamnist",))
    assert isinstance(params.train.lr, float)
    assert params.train.batch_size == load_params("smoke").train.batch_size  # a nested override keeps the rest


def test_hash_changes_when_a_value_changes_and_only_then():
    base = load_params("smoke")
    assert load_params("smoke").hash == base.hash
    assert load_params("smoke", train={"epochs": base.train.epochs + 1}).hash != base.hash
    assert load_params("smoke", train={"lr": base.train.lr * 2}).hash != base.hash
    assert load_params("smoke", datasets=["retinamnist"]).hash != base.hash
    assert load_params("smoke", description="another wording").hash == base.hash


def test_params_are_frozen():
    params = load_params("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.repetitions = 100


def test_unknown_profile_lists_profiles():
    with pytest.raises(ParamsError, match="unknown profile 'quik'") as err:
        load_params("quik")
    assert "quick" in str(err.value) and "smoke" in str(err.value)


def test_a_profile_that_is_not_a_mapping_is_rejected(tmp_path):
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(write_profile(tmp_path, "- epochs\n- 3\n"))


def test_params_dir_can_be_moved_with_the_environment(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("description: my own\ntrain: {epochs: 7}\n")
    monkeypatch.setenv("MEDVIT_PARAMS_DIR", str(tmp_path))
    assert list_profiles() == ["mine"]
    params = load_params("mine")
    assert (params.profile, params.train.epochs, params.train.batch_size) == ("mine", 7, Params("x").train.batch_size)


def test_seed_per_repetition_and_dataset_options():
    params = load_params("smoke", seed=10)
    assert [params.seed_for(r) for r in range(3)] == [10, 11, 12]
    options = params.options_for("synthetic_shapes")
    options["size"] = 999  # a copy: the frozen params are not changed through it
    assert params.options_for("synthetic_shapes")["size"] != 999
    assert params.options_for("not_in_profile") == {}


@pytest.mark.parametrize("override, message", [
    ({"train": {"epochs": 0}}, "epochs=0 is out of range"),
    ({"knn_temperature": 0}, "knn_temperature=0.0 is out of range"),
    ({"train": {"grad_clip": 0}}, "grad_clip=0.0 is out of range"),
    ({"train": {"lr": -1e-4}}, "lr=-0.0001 is out of range"),
    ({"repetitions": -1}, "repetitions=-1 is out of range"),
    ({"img_size": 70}, "img_size=70 is out of range; expected a positive multiple of 16"),
    ({"device": "gpu"}, "device='gpu' is out of range"),
    ({"precision": "fp8"}, "precision='fp8' is out of range"),
    ({"slurm": {"time": "soon"}}, "time='soon' is out of range"),
])
def test_values_no_run_can_use_are_rejected_naming_key_value_and_range(override, message):
    with pytest.raises(ParamsError, match=message):
        load_params("smoke", **override)


def test_yaml_exponent_without_a_dot_is_a_float(tmp_path):
    path = write_profile(tmp_path, "train: {lr: 1e-4}\n")  # YAML 1.1 reads this as the string '1e-4'
    assert load_params(path).train.lr == 1e-4


@pytest.mark.parametrize("override, message", [
    ({"datasets": ["retinamnsit"]}, "unknown dataset 'retinamnsit' \\(did you mean 'retinamnist'\\?\\)"),
    ({"fig1_models": ["resnet05"]}, "unknown model 'resnet05' \\(did you mean 'resnet50'\\?\\)"),
    ({"fig1_inits": ["imagnet"]}, "unknown init 'imagnet' \\(did you mean 'imagenet'\\?\\)"),
    ({"train": {"epoch": 3}}, "unknown parameter 'train.epoch' \\(did you mean 'epochs'\\?\\)"),
])
def test_unknown_names_in_any_list_get_a_did_you_mean(override, message):
    with pytest.raises(ParamsError, match=message):
        load_params("smoke", **override)


@pytest.mark.parametrize("sections, message", [
    ({"fig3": {"models": ["resnet05"]}}, "figures.fig3.models names unknown model 'resnet05' \\(did you mean 'resnet50'"),
    ({"fig2": {"inits": ["imagnet"]}}, "figures.fig2.inits names unknown init 'imagnet' \\(did you mean 'imagenet'"),
    ({"fig2": {"inits": ["random+dino_indomain"]}}, "segmentation starts from the paper's inits only"),
    ({"fig3": {"model": ["resnet18"]}}, "unknown parameter 'figures.fig3.model' \\(did you mean 'models'"),
    ({"fig4": {"images": "three"}}, "figures.fig4.images='three'"),
    ({"fig4": {"images": 0}}, "images=0: expected an integer >= 1"),
    ({"fig6": {"images": 2}}, "figures.fig6 is not a figure with settings"),
])
def test_a_figures_own_section_is_checked_by_its_settings_before_anything_runs(sections, message):
    params = load_params("smoke", figures=sections)
    with pytest.raises(ParamsError, match=message):
        check_sections(params)
    with pytest.raises(ParamsError, match=message):
        grid_runs(params)


def test_an_override_of_a_figures_section_changes_only_the_settings_it_names():
    params = load_params("smoke", figures={"fig3": {"models": ["resnet18"]}})
    assert fig3.settings(params) == fig3.Settings(datasets=("synthetic_shapes",), models=("resnet18",),
                                                  inits=("random",))
    assert fig4.settings(params).images == 3, "the other sections as the profile gives them"
    with pytest.raises(ParamsError, match="figures=.* should be a mapping of figure"):
        load_params("smoke", figures={"fig3": ["resnet18"]})


def test_the_paper_profile_trains_the_authors_published_25_epochs():
    assert load_params("paper").train.epochs == 25
