"""Profiles that cannot run are refused when they load (issue #23), each with one error naming the file and the
field: a key given twice, an empty body, a non-finite number at any depth, dataset options of the wrong shape or
type, a file that is not UTF-8 or not YAML."""
from __future__ import annotations

import pytest

from medvit import ParamsError, load_params


def write_profile(tmp_path, text: str | bytes):
    path = tmp_path / "custom.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("text, key, lines", [
    ("description: x\ntrain: {epochs: 2}\nrepetitions: 1\ntrain: {lr: 0.001}\n", "'train'", (2, 4)),
    ("description: x\ntrain:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n", "'epochs'", (3, 5)),
    ("dataset_options:\n  retinamnist: {size: 28}\n  breastmnist: {size: 28}\n  retinamnist: {size: 64}\n",
     "'retinamnist'", (2, 4)),
])
def test_a_key_given_twice_names_the_file_the_key_and_both_lines(tmp_path, text, key, lines):
    path = write_profile(tmp_path, text)
    with pytest.raises(ParamsError, match=f"duplicate key {key} on lines {lines[0]} and {lines[1]}") as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path):
    path = write_profile(tmp_path, "description: x\ntrain: &t {epochs: 3, lr: 0.01}\nseg_train: {<<: *t, epochs: 4}\n")
    params = load_params(path)
    assert (params.seg_train.epochs, params.seg_train.lr) == (4, 0.01)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_profile_is_refused_naming_the_file(tmp_path, text):
    path = write_profile(tmp_path, text)
    with pytest.raises(ParamsError, match="the profile is empty") as err:
        load_params(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["false\n", "[]\n", "0\n", "just words\n"])
def test_a_profile_that_is_not_a_mapping_is_refused_naming_the_file(tmp_path, text):
    path = write_profile(tmp_path, text)
    with pytest.raises(ParamsError, match="expected a mapping of parameter: value") as err:
        load_params(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text, field", [
    ("train: {lr: .inf}\n", "train.lr=inf"),
    ("train: {lr: -.inf}\n", "train.lr=-inf"),
    ("train: {lr: inf}\n", "train.lr='inf'"),  # YAML 1.1 reads 'inf' as a string; floats are read from strings
    ("knn_temperature: .nan\n", "knn_temperature=nan"),
    ("seg_train: {weight_decay: .nan}\n", "seg_train.weight_decay=nan"),
    ("dino: {global_crop_scale: [0.4, .inf]}\n", r"dino.global_crop_scale\[1\]=inf"),
    ("slurm: {mem_gb: .inf}\n", "slurm.mem_gb=inf"),
    ("dataset_options:\n  cbis_ddsm: {val_size: .nan}\n", "dataset_options.cbis_ddsm.val_size=nan"),
])
def test_a_non_finite_number_at_any_depth_is_refused_naming_the_field(tmp_path, text, field):
    path = write_profile(tmp_path, f"description: x\n{text}")
    with pytest.raises(ParamsError, match=f"{field} is not a finite number") as err:
        load_params(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("override, field", [
    ({"train": {"lr": float("inf")}}, "train.lr=inf"),
    ({"train": {"lr": "-inf"}}, "train.lr='-inf'"),
    ({"knn_temperature": float("nan")}, "knn_temperature=nan"),
    ({"dataset_options": {"synthetic_shapes": {"size": 32, "extra": float("inf")}}},
     "dataset_options.synthetic_shapes.extra=inf"),
])
def test_a_non_finite_override_is_refused_naming_the_field(override, field):
    with pytest.raises(ParamsError, match=f"override: {field} is not a finite number"):
        load_params("smoke", **override)


@pytest.mark.parametrize("options, message", [
    ("{retinamnist: {size: '32'}}", "dataset_options.retinamnist.size='32' should be int"),
    ("{retinamnist: {size: 28.0}}", "dataset_options.retinamnist.size=28.0 should be int"),
    ("{retinamnist: [size, 32]}", r"dataset_options.retinamnist=\['size', 32\] should be a mapping"),
    ("{retinamnist: 28}", "dataset_options.retinamnist=28 should be a mapping"),
    ("[retinamnist]", r"dataset_options=\['retinamnist'\] should be dict"),
    ("{retinamnist: {sise: 28}}", "unknown option 'dataset_options.retinamnist.sise' \\(did you mean 'size'\\?\\)"),
    ("{synthetic_shapes: {n_train: many}}", "dataset_options.synthetic_shapes.n_train='many' should be int"),
    ("{cbis_ddsm: {abnormality: [mass]}}", r"dataset_options.cbis_ddsm.abnormality=\['mass'\] should be str"),
    ("{seg_folder: {mean: [0.5, high, 0.5]}}", "dataset_options.seg_folder.mean=.* should be"),
    ("{retinamnsit: {size: 28}}", "unknown dataset 'retinamnsit' \\(did you mean 'retinamnist'\\?\\)"),
])
def test_dataset_options_of_the_wrong_shape_or_type_are_refused_naming_the_field(tmp_path, options, message):
    path = write_profile(tmp_path, f"description: x\ndataset_options: {options}\n")
    with pytest.raises(ParamsError, match=message) as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_dataset_options_of_the_declared_types_load_as_given(tmp_path):
    path = write_profile(tmp_path, "description: x\ndataset_options:\n  retinamnist: {size: 64}\n"
                                   "  cbis_ddsm: {abnormality: mass, val_size: 1e-1}\n"
                                   "  seg_folder: {mean: [0.5, 0.5, 0.5], std: null, channels: 3}\n")
    options = load_params(path).dataset_options
    assert options == {"retinamnist": {"size": 64}, "cbis_ddsm": {"abnormality": "mass", "val_size": 0.1},
                       "seg_folder": {"mean": [0.5, 0.5, 0.5], "std": None, "channels": 3}}


def test_a_wrongly_typed_dataset_option_override_is_refused():
    with pytest.raises(ParamsError, match="override: dataset_options.synthetic_shapes.size='32' should be int"):
        load_params("smoke", dataset_options={"synthetic_shapes": {"size": "32"}})


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_profile_that_is_not_utf8_is_refused_naming_the_file(tmp_path, encoding):
    path = write_profile(tmp_path, "description: x\nimg_size: 32\n".encode(encoding))
    with pytest.raises(ParamsError, match="cannot read profile") as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_a_utf8_profile_with_a_byte_order_mark_loads(tmp_path):
    path = write_profile(tmp_path, "description: x\nimg_size: 32\n".encode("utf-8-sig"))
    assert load_params(path).img_size == 32


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    path = write_profile(tmp_path, "description: x\ntrain: {epochs: 2\nimg_size: 32\n")
    with pytest.raises(ParamsError, match="cannot read profile") as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"cannot read profile {path}:") and f'in "{path}", line 3' in message
