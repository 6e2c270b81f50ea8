"""Bad data, as a user meets it, gets one error naming its cause: an empty label cell names the file, row and
column (and no other label); a data root that is a file is named; a mistyped data root gets no folder made
under it; every unreadable image of a folder is reported, not only the first."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvit.data import DataError, DataMissing, DatasetInfo, ImageDataset, cached, create_dataset
from medvit.data.isic import CLASSES as ISIC_CLASSES
from medvit.data.segmentation import SegmentationDataset, resized, segmentation_info


def write_image(path, seed=0, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# ---- an empty cell in a label column ----------------------------------------------------------------------

def test_an_empty_label_cell_names_the_file_row_and_column_and_no_other_label(tmp_path):
    root = tmp_path / "aptos2019"
    (root / "train_images").mkdir(parents=True)
    labels = [str(i % 5) for i in range(12)]
    labels[7] = ""
    pd.DataFrame({"id_code": [f"{i:04x}abcd{i}" for i in range(12)], "diagnosis": labels}).to_csv(
        root / "train.csv", index=False)
    with pytest.raises(DataError) as err:
        create_dataset("aptos2019", "train", root=root)
    message = str(err.value)
    assert message.startswith(f"{root / 'train.csv'}: column 'diagnosis' is empty in row 7 (line 9); expected ")
    assert "'0.0'" not in message and "not in the expected classes" not in message  # the other labels are fine


def test_several_empty_label_cells_are_counted(tmp_path):
    root = tmp_path / "isic_uda1"
    root.mkdir()
    (root / "images").mkdir()
    values = ["benign", "", "malignant", "", "benign", ""]
    pd.DataFrame({"image": [f"ISIC_{i:07d}" for i in range(6)], "benign_malignant": values}).to_csv(
        root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata.csv: column 'benign_malignant' is empty in 3 rows: "
                                        r"rows 1, 3, 5 \(lines 3, 5, 7\)"):
        create_dataset("isic_uda1", "train", root=root)


def test_image_ids_that_look_like_numbers_stay_as_written(tmp_path):
    root = tmp_path / "aptos2019"
    (root / "train_images").mkdir(parents=True)
    ids = ["0012", "1e5", "0034", "12", "7.50"]  # pandas would read 12.0, 100000.0, 34.0, 12.0, 7.5
    (root / "train.csv").write_text("id_code,diagnosis\n" + "".join(f"{i},{n % 5}\n" for n, i in enumerate(ids)))
    paths = [p for s in ("train", "val", "test") for p in create_dataset("aptos2019", s, root=root).paths]
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == sorted(f"{i}.png" for i in ids)


def test_an_empty_one_hot_cell_names_the_row_and_column(tmp_path):
    root = tmp_path / "isic2019"
    (root / "train").mkdir(parents=True)
    onehot = np.eye(len(ISIC_CLASSES))[np.arange(10) % len(ISIC_CLASSES)]
    df = pd.DataFrame(onehot, columns=list(ISIC_CLASSES)).astype(object)
    df.insert(0, "image", [f"ISIC_{i:07d}" for i in range(10)])
    df.loc[4, "BCC"] = ""
    df.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match=r"GroundTruth.csv: column 'BCC' is empty in row 4 \(line 6\)"):
        create_dataset("isic2019", "train", root=root)


def test_an_empty_pathology_cell_names_the_row_and_column(tmp_path):
    root = tmp_path / "cbis_ddsm"
    root.mkdir()
    for kind in ("mass", "calc"):
        pathology = ["BENIGN", "" if kind == "calc" else "MALIGNANT", "BENIGN"]
        pd.DataFrame({"patient_id": ["P_1", "P_2", "P_3"], "pathology": pathology,
                      "image file path": [f"{kind}/{i}/000000.dcm" for i in range(3)]}).to_csv(
            root / f"{kind}_case_description_train_set.csv", index=False)
    with pytest.raises(DataError, match=r"calc_case_description_train_set.csv: column 'pathology' is empty in "
                                        r"row 1 \(line 3\)"):
        create_dataset("cbis_ddsm", "train", root=root)


# ---- data roots -------------------------------------------------------------------------------------------

def test_a_medmnist_root_that_is_a_file_is_one_data_error_naming_it(tmp_path, monkeypatch, no_network):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("a file")
    with pytest.raises(DataError, match=f"{not_a_folder} is a file, not a folder"):
        create_dataset("breastmnist", "train", root=not_a_folder)
    monkeypatch.setenv("MEDVIT_DATA_ROOT", str(not_a_folder))
    with pytest.raises(DataError, match=f"{not_a_folder} is a file, not a folder"):
        create_dataset("breastmnist", "train")


@pytest.mark.parametrize("dataset", ["isic_uda1", "aptos2019", "isic2019", "ddsm", "chexpert", "pcam", "ph2"])
def test_a_data_root_that_is_a_file_is_named_by_every_file_backed_dataset(tmp_path, dataset):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("a file")
    with pytest.raises(DataError, match=str(not_a_folder)):
        create_dataset(dataset, "train", root=not_a_folder)


def test_a_mistyped_data_root_gets_no_folder_made_under_it(tmp_path, monkeypatch, no_network):
    typo = tmp_path / "shraed" / "data"
    monkeypatch.setenv("MEDVIT_DATA_ROOT", str(typo))
    with pytest.raises(DataError, match=f"{typo}.* does not exist"):
        create_dataset("breastmnist", "train")
    with pytest.raises(DataError, match=f"{typo} does not exist, so {typo / 'medmnist'} cannot be made"):
        create_dataset("breastmnist", "train", data_root=typo)
    with pytest.raises(DataError, match=f"{typo} does not exist"):
        create_dataset("breastmnist", "train", root=typo / "medmnist")
    assert list(tmp_path.iterdir()) == []


def test_medmnist_downloads_into_a_new_folder_inside_an_existing_data_root(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("MEDVIT_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataMissing, match=f"could not download .* to {tmp_path / 'medmnist' / 'breastmnist.npz'}"):
        create_dataset("breastmnist", "train")  # offline: the download fails, but was tried in the right folder
    assert [p.name for p in tmp_path.iterdir()] == ["medmnist"]


# ---- several unreadable images ----------------------------------------------------------------------------

INFO = DatasetInfo(name="tiny", task="multiclass", num_outputs=3, target_metric="accuracy", channels=3,
                   mean=(0.5,) * 3, std=(0.25,) * 3)


def folder_with_bad_images(folder, n=12, bad=(2, 5, 6, 9, 10, 11, 0)):
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        write_image(path, i)
        if i in bad:
            path.write_bytes(path.read_bytes()[:40])  # truncated
        paths.append(str(path))
    return paths, [paths[i] for i in sorted(bad)]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_unreadable_image_of_a_folder_is_reported(tmp_path, workers):
    paths, bad = folder_with_bad_images(tmp_path / "images")
    dataset = ImageDataset(INFO, "train", labels=np.arange(len(paths)) % 3, paths=paths)
    with pytest.raises(DataError) as err:
        cached(dataset, size=8, cache_dir=tmp_path / "cache", workers=workers)
    message = str(err.value)
    assert message.startswith("7 unreadable image(s) of 12 in 'tiny' (train): cannot read image ")
    assert all(p in message for p in bad[:5]) and "; and 2 more." in message and "skip_unreadable=True" in message
    assert [p.name for p in (tmp_path / "cache" / "tiny").iterdir()] == []


def test_every_unreadable_image_or_mask_of_a_segmentation_folder_is_reported(tmp_path):
    paths, bad = folder_with_bad_images(tmp_path / "images", n=6, bad=(1, 4))
    masks = [str(tmp_path / "masks" / f"m{i}.png") for i in range(6)]
    for m in masks:
        write_image(tmp_path / "masks" / m.rsplit("/", 1)[1])
    (tmp_path / "masks" / "m2.png").write_bytes(b"not a png")
    info = segmentation_info("seg", 3, (0.5,) * 3, (0.25,) * 3, "test set")
    dataset = SegmentationDataset(info, "train", paths=paths, mask_paths=masks)
    expected = r"3 unreadable file\(s\) \(images or masks\) among the 6 items of 'seg' \(train\): "
    with pytest.raises(DataError, match=expected) as err:
        resized(dataset, 8)
    assert all(p in str(err.value) for p in [*bad, masks[2]])
