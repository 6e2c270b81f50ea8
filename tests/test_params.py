"""Parameters are data (DESIGN "What medvit takes" 5): every profile loads into the frozen Params, unknown or
mistyped keys are one error naming the key and the file, None overrides keep the profile, the hash tracks values."""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from medvit import Params, ParamsError, list_profiles, load_params
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
            held = getattr(params, key)
            assert (list(held) if isinstance(held, tuple) else held) == value, f"{name}: {key}"


def test_profile_values_have_the_declared_types():
    for name in list_profiles():
        params = load_params(name)
        assert isinstance(params.datasets, tuple) and all(isinstance(d, str) for d in params.datasets)
        assert isinstance(params.lr, float) and isinstance(params.epochs, int)


def write_profile(tmp_path, text: str):
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return path


def test_unknown_key_in_a_profile_names_key_and_file(tmp_path):
    path = write_profile(tmp_path, "description: x\nepochs: 3\nwarmup_iterations: 10\n")
    with pytest.raises(ParamsError, match="unknown parameter 'warmup_iterations'") as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_unknown_override_is_named():
    with pytest.raises(ParamsError, match="override: unknown parameter 'epoch'"):
        load_params("smoke", epoch=3)


@pytest.mark.parametrize("text, key", [("epochs: ten\n", "epochs"), ("epochs: true\n", "epochs"),
                                       ("lr: fast\n", "lr"), ("datasets: retinamnist\n", "datasets"),
                                       ("compile: 1\n", "compile")])
def test_wrong_type_names_the_key_and_file(tmp_path, text, key):
    path = write_profile(tmp_path, text)
    with pytest.raises(ParamsError, match=f"{key}=") as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_wrong_type_override_names_the_key():
    with pytest.raises(ParamsError, match=r"override: epochs='3' should be"):
        load_params("smoke", epochs="3")


def test_none_overrides_keep_the_profile_values():
    raw = yaml.safe_load((params_dir() / "smoke.yaml").read_text())
    params = load_params("smoke", epochs=None, img_size=None, datasets=None)
    assert params.epochs == raw["epochs"] and params.img_size == raw["img_size"]
    assert list(params.datasets) == raw["datasets"]
    assert params == load_params("smoke")


def test_overrides_replace_profile_values_with_coercion():
    params = load_params("smoke", epochs=5, lr=1, datasets=["retinamnist"])
    assert (params.epochs, params.lr, params.datasets) == (5, 1.0, ("retinamnist",))
    assert isinstance(params.lr, float)


def test_hash_changes_when_a_value_changes_and_only_then():
    base = load_params("smoke")
    assert load_params("smoke").hash == base.hash
    assert load_params("smoke", epochs=base.epochs + 1).hash != base.hash
    assert load_params("smoke", lr=base.lr * 2).hash != base.hash
    assert load_params("smoke", datasets=["retinamnist"]).hash != base.hash
    assert load_params("smoke", description="another wording").hash == base.hash


def test_params_are_frozen():
    params = load_params("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.epochs = 100


def test_unknown_profile_lists_profiles():
    with pytest.raises(ParamsError, match="unknown profile 'quik'") as err:
        load_params("quik")
    assert "quick" in str(err.value) and "smoke" in str(err.value)


def test_a_profile_that_is_not_a_mapping_is_rejected(tmp_path):
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(write_profile(tmp_path, "- epochs\n- 3\n"))


def test_params_dir_can_be_moved_with_the_environment(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("description: my own\nepochs: 7\n")
    monkeypatch.setenv("MEDVIT_PARAMS_DIR", str(tmp_path))
    assert list_profiles() == ["mine"]
    params = load_params("mine")
    assert (params.profile, params.epochs, params.batch_size) == ("mine", 7, Params("x").batch_size)


def test_seed_per_repetition_and_dataset_options():
    params = load_params("smoke", seed=10)
    assert [params.seed_for(r) for r in range(3)] == [10, 11, 12]
    options = params.options_for("synthetic_shapes")
    options["size"] = 999  # a copy: the frozen params are not changed through it
    assert params.options_for("synthetic_shapes")["size"] != 999
    assert params.options_for("not_in_profile") == {}
