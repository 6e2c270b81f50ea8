"""The paper's classification datasets (docs/protocol.md §2), each on a tiny fixture written in its published layout."""
import pickle

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvit.data import DataError, authors_split, cached, create_dataset, dataset_description
from medvit.data.chexpert import FINDINGS
from medvit.data.isic import CLASSES as ISIC_CLASSES
from medvit.data.pcam import H5Images

SPLITS = ("train", "val", "test")


def write_image(path, seed, size=(12, 10), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, format=fmt)


# ---- APTOS 2019 ------------------------------------------------------------------------------------------

@pytest.fixture
def aptos_root(tmp_path):
    root = tmp_path / "aptos2019"
    root.mkdir()
    ids = [f"{i:04x}abcd{i}" for i in range(20)]
    pd.DataFrame({"id_code": ids, "diagnosis": [i % 5 for i in range(20)]}).to_csv(root / "train.csv", index=False)
    for i, name in enumerate(ids):
        write_image(root / "train_images" / f"{name}.png", i)
    return root


def test_aptos_labels_follow_authors_split_of_csv_rows(aptos_root):
    split = authors_split(20, 0.3)
    for s in SPLITS:
        ds = create_dataset("aptos2019", s, root=aptos_root)
        assert ds.labels.tolist() == [i % 5 for i in split[s]]
        assert ds.paths[0].endswith(f"train_images/{split[s][0]:04x}abcd{split[s][0]}.png")
    assert [len(create_dataset("aptos2019", s, root=aptos_root)) for s in SPLITS] == [14, 3, 3]


def test_aptos_info_is_the_papers(aptos_root):
    ds = create_dataset("aptos2019", "val", data_root=aptos_root.parent)
    info = ds.info
    assert (info.task, info.num_outputs, info.target_metric, info.channels) == ("multiclass", 5, "quadratic_kappa", 3)
    assert info.mean == (0.415, 0.221, 0.073) and info.std == (0.275, 0.150, 0.081)
    assert ds.load_image(0).shape == (10, 12, 3)


def test_aptos_missing_csv_says_what_and_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"train\.csv.*kaggle\.com/competitions/aptos2019"):
        create_dataset("aptos2019", "train", root=tmp_path)


def test_aptos_missing_image_folder_is_named(aptos_root):
    (aptos_root / "train_images").rename(aptos_root / "elsewhere")
    with pytest.raises(DataError, match="train_images"):
        create_dataset("aptos2019", "train", root=aptos_root)


# ---- ISIC 2019 -------------------------------------------------------------------------------------------

def write_isic(root, n=30, folder="ISIC_2019_Training_Input"):
    names = [f"ISIC_{i:07d}" for i in range(n)]
    onehot = np.zeros((n, 9))
    onehot[np.arange(n), np.arange(n) % 8] = 1.0
    df = pd.DataFrame(onehot, columns=[*ISIC_CLASSES, "UNK"])
    df.insert(0, "image", names)
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    for i, name in enumerate(names):
        write_image(root / folder / f"{name}.jpg", i)
    return root


@pytest.mark.parametrize("folder", ["ISIC_2019_Training_Input", "train"])
def test_isic2019_one_hot_columns_become_class_indices(tmp_path, folder):
    root = write_isic(tmp_path / "isic2019", folder=folder)
    split = authors_split(30, 0.2)
    sizes = []
    for s in SPLITS:
        ds = create_dataset("isic2019", s, root=root)
        assert ds.labels.tolist() == [i % 8 for i in split[s]]
        assert ds.paths[0].endswith(f"{folder}/ISIC_{split[s][0]:07d}.jpg")
        sizes.append(len(ds))
    assert sizes == [24, 3, 3]
    info = ds.info
    assert (info.task, info.num_outputs, info.target_metric, info.channels) == ("multiclass", 8, "macro_recall", 3)
    assert info.mean == (0.6678, 0.5296, 0.5243) and info.std == (0.2238, 0.2036, 0.2154)


def test_isic2019_row_that_is_not_one_hot_is_named(tmp_path):
    root = write_isic(tmp_path / "isic2019", n=10)
    df = pd.read_csv(root / "ISIC_2019_Training_GroundTruth.csv")
    df.loc[4, "NV"] = 1.0  # row 4 is BKL already: two classes
    df.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match=r"row 4 \(image 'ISIC_0000004'\) is not one-hot"):
        create_dataset("isic2019", "train", root=root)


def test_isic2019_missing_images_say_which_folders_were_tried(tmp_path):
    root = write_isic(tmp_path / "isic2019", n=4)
    (root / "ISIC_2019_Training_Input").rename(root / "images")
    with pytest.raises(DataError, match=r"ISIC_2019_Training_Input.*challenge\.isic-archive\.com"):
        create_dataset("isic2019", "train", root=root)


def test_isic2019_missing_ground_truth_is_named(tmp_path):
    with pytest.raises(DataError, match="ISIC_2019_Training_GroundTruth.csv"):
        create_dataset("isic2019", "test", root=tmp_path)


# ---- DDSM (the authors' DeepMiner lists) -------------------------------------------------------------------

DDSM_LISTS = {
    "train": ["normal_08-A_0001_1.LEFT_CC.LJPEG.1.jpg", "cancer_05-C_0128_1.LEFT_MLO.LJPEG.1.jpg",
              "benign_without_callback_01-B_3167_1.RIGHT_CC.LJPEG.1.jpg", "normal_08-A_0002_1.RIGHT_MLO.LJPEG.1.jpg"],
    "val": ["benign_01-B_3099_1.LEFT_CC.LJPEG.1.jpg", "normal_09-A_0003_1.LEFT_CC.LJPEG.1.jpg"],
    "test": ["cancer_01-C_0001_1.LEFT_CC.LJPEG.1.jpg"],
}


@pytest.fixture
def ddsm_root(tmp_path):
    root = tmp_path / "ddsm"
    (root / "ddsm_raw_image_lists").mkdir(parents=True)
    for s, names in DDSM_LISTS.items():
        (root / "ddsm_raw_image_lists" / f"{s}.txt").write_text("\n".join(names) + "\n")
        for i, name in enumerate(names):
            write_image(root / "ddsm_raw" / name, i, mode="L")
    return root


def test_ddsm_label_is_filename_prefix_normal_vs_abnormal(ddsm_root):
    got = {s: create_dataset("ddsm", s, root=ddsm_root) for s in SPLITS}
    assert got["train"].labels.tolist() == [0, 1, 1, 0]
    assert got["val"].labels.tolist() == [1, 0]
    assert got["test"].labels.tolist() == [1]
    assert got["val"].paths[0] == str(ddsm_root / "ddsm_raw" / DDSM_LISTS["val"][0])
    info = got["test"].info
    assert (info.task, info.num_outputs, info.target_metric, info.channels) == ("binary", 1, "roc_auc", 1)
    assert info.mean == (0.286,) and info.std == (0.267,)
    assert got["test"].load_image(0).shape == (10, 12, 1)


def test_ddsm_unknown_prefix_names_list_and_file(ddsm_root):
    (ddsm_root / "ddsm_raw_image_lists" / "test.txt").write_text("malignant_01.jpg\n")
    with pytest.raises(DataError, match=r"test\.txt.*'malignant_01\.jpg'"):
        create_dataset("ddsm", "test", root=ddsm_root)


def test_ddsm_missing_list_says_layout_and_source(tmp_path):
    (tmp_path / "ddsm_raw").mkdir()
    with pytest.raises(DataError, match=r"ddsm_raw_image_lists/val\.txt.*ddsm-visual-primitives"):
        create_dataset("ddsm", "val", root=tmp_path)


# ---- CBIS-DDSM (TCIA case descriptions) ----------------------------------------------------------------------

def cbis_csv(root, kind, part, rows):
    """rows: (patient, pathology, image number); columns as TCIA's case-description CSVs."""
    prefix = {"train": "Training", "test": "Test"}[part]
    table = []
    for patient, pathology, image in rows:
        folder = f"{kind.capitalize()}-{prefix}_{patient}_LEFT_CC"
        table.append({"patient_id": patient, "breast_density": 2, "left or right breast": "LEFT",
                      "image view": "CC", "abnormality id": 1, "abnormality type": kind, "assessment": 4,
                      "pathology": pathology, "subtlety": 3,
                      "image file path": f"{folder}/1.3.6.1.4.{image}/1.3.6.1.4.{image}.1/000000.dcm",
                      "cropped image file path": f"{folder}_1/1.3.6/1.3.6.2/000000.dcm",
                      "ROI mask file path": f"{folder}_1/1.3.6/1.3.6.3/000001.dcm"})
    pd.DataFrame(table).to_csv(root / f"{kind}_case_description_{part}_set.csv", index=False)
    for patient, _, image in rows:
        folder = f"{kind.capitalize()}-{prefix}_{patient}_LEFT_CC"
        write_image(root / folder / f"1.3.6.1.4.{image}" / f"1.3.6.1.4.{image}.1" / "000000.png", image, mode="L")


@pytest.fixture
def cbis_root(tmp_path):
    root = tmp_path / "cbis_ddsm"
    root.mkdir()
    train = [(f"P_{i:05d}", ["BENIGN", "MALIGNANT", "BENIGN_WITHOUT_CALLBACK"][i % 3], i) for i in range(20)]
    train.append(("P_00000", "MALIGNANT", 0))  # a second, malignant abnormality on P_00000's (benign) image
    cbis_csv(root, "mass", "train", train)
    cbis_csv(root, "calc", "train", [(f"P_{i:05d}", "BENIGN", 100 + i) for i in range(20, 30)])
    cbis_csv(root, "mass", "test", [("P_00100", "MALIGNANT", 200), ("P_00101", "BENIGN", 201)])
    cbis_csv(root, "calc", "test", [("P_00102", "BENIGN_WITHOUT_CALLBACK", 202)])
    return root


def test_cbis_ddsm_is_benign_vs_malignant_one_row_per_image(cbis_root):
    test = create_dataset("cbis_ddsm", "test", root=cbis_root)
    assert test.labels.tolist() == [1, 0, 0]
    assert test.paths[0].endswith("Mass-Test_P_00100_LEFT_CC/1.3.6.1.4.200/1.3.6.1.4.200.1/000000.png")
    train, val = (create_dataset("cbis_ddsm", s, root=cbis_root) for s in ("train", "val"))
    assert len(train) + len(val) == 30  # 31 abnormality rows, 30 images
    labels = dict(zip(train.paths + val.paths, np.concatenate([train.labels, val.labels])))
    image0 = next(p for p in labels if "Mass-Training_P_00000_" in p)
    assert labels[image0] == 1  # malignant if any abnormality on the image is
    assert test.info.num_outputs == 1 and test.info.target_metric == "roc_auc" and test.info.channels == 1
    assert "different task" in test.info.description and "'ddsm'" in test.info.description
    assert "different task" in dataset_description("cbis_ddsm")


def test_cbis_ddsm_val_split_is_patient_level_and_documented(cbis_root):
    train, val = (create_dataset("cbis_ddsm", s, root=cbis_root, val_size=0.2) for s in ("train", "val"))
    patient = lambda p: p.split("_P_")[1][:5]  # noqa: E731
    assert len(val) == 6  # int(30 patients * 0.2), one image each
    assert not {patient(p) for p in train.paths} & {patient(p) for p in val.paths}
    assert "[ours]" in train.info.description


def test_cbis_ddsm_mass_only_reads_only_mass_csvs(cbis_root):
    test = create_dataset("cbis_ddsm", "test", root=cbis_root, abnormality="mass")
    assert len(test) == 2 and all("Mass-Test" in p for p in test.paths)


def test_cbis_ddsm_unknown_pathology_is_named(cbis_root):
    csv = cbis_root / "calc_case_description_test_set.csv"
    df = pd.read_csv(csv)
    df.loc[0, "pathology"] = "UNPROVEN"
    df.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"calc_case_description_test_set\.csv.*'UNPROVEN'"):
        create_dataset("cbis_ddsm", "test", root=cbis_root)


def test_cbis_ddsm_missing_csv_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"mass_case_description_train_set\.csv.*TCIA"):
        create_dataset("cbis_ddsm", "val", root=tmp_path)


# ---- CheXpert ----------------------------------------------------------------------------------------------

def write_chexpert(root, paths, findings=None):
    """train.csv in CheXpert-v1.0-small's column order; images at <root>/<path without its first part>."""
    n = len(paths)
    df = pd.DataFrame({"Path": paths, "Sex": "Female", "Age": 50, "Frontal/Lateral": "Frontal", "AP/PA": "AP"})
    values = findings if findings is not None else np.zeros((n, len(FINDINGS)))
    for j, name in enumerate(FINDINGS):
        df[name] = values[:, j]
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "train.csv", index=False)
    for i, p in enumerate(paths):
        write_image(root.joinpath(*p.split("/")[1:]), i, mode="L")
    return root


def chexpert_paths():
    """25 rows in the official order: patient00001 has 12 studies (study10 sorts before study2)."""
    first = [f"CheXpert-v1.0-small/train/patient00001/study{s}/view1_frontal.jpg" for s in range(1, 13)]
    rest = [f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view1_frontal.jpg" for p in range(2, 15)]
    return first + rest


def test_chexpert_split_follows_authors_label_based_loc_slicing(tmp_path):
    # Sorted by Path the row labels read 0, 9, 10, 11, 1..8, 12..24; k = int(25 * 0.2) + 15 = 20.
    # train = from label 20 on; val+test = up to label 20 (21 rows); half = 10:
    # val = up to label 10 -> [0, 9, 10]; test = from label 10 -> [10, 11, 1..8, 12..20].
    root = write_chexpert(tmp_path / "chexpert", chexpert_paths())
    row_of = {str(root.joinpath(*p.split("/")[1:])): i for i, p in enumerate(chexpert_paths())}
    got = {s: [row_of[p] for p in create_dataset("chexpert", s, root=root).paths] for s in SPLITS}
    assert got["train"] == [20, 21, 22, 23, 24]
    assert got["val"] == [0, 9, 10]
    assert got["test"] == [10, 11, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 16, 17, 18, 19, 20]


def test_chexpert_labels_are_u_zeros_and_empty_rows_become_no_finding(tmp_path):
    paths = chexpert_paths()
    findings = np.full((25, len(FINDINGS)), np.nan)
    findings[:, FINDINGS.index("Edema")] = -1.0  # uncertain everywhere → 0
    findings[20, FINDINGS.index("Cardiomegaly")] = 1.0
    findings[21, FINDINGS.index("Fracture")] = 0.0
    findings[22, FINDINGS.index("No Finding")] = 1.0
    root = write_chexpert(tmp_path / "chexpert", paths, findings)
    train = create_dataset("chexpert", "train", root=root)  # rows 20..24
    expected = np.zeros((5, 14), np.float32)
    expected[0, FINDINGS.index("Cardiomegaly")] = 1
    expected[1:, FINDINGS.index("No Finding")] = 1
    np.testing.assert_array_equal(train.labels, expected)
    info = train.info
    assert (info.task, info.num_outputs, info.target_metric, info.channels) == ("multilabel", 14, "roc_auc", 1)
    assert info.mean == (0.503,) and info.std == (0.292,) and info.class_names == FINDINGS
    assert train.paths[0] == str(root / "train" / "patient00010" / "study1" / "view1_frontal.jpg")
    assert train.load_image(0).shape == (10, 12, 1)


def test_chexpert_accepts_the_folder_holding_chexpert_v1_small(tmp_path):
    write_chexpert(tmp_path / "chexpert" / "CheXpert-v1.0-small", chexpert_paths())
    assert len(create_dataset("chexpert", "train", root=tmp_path / "chexpert")) == 5


def test_chexpert_bad_label_value_is_named(tmp_path):
    findings = np.zeros((25, len(FINDINGS)))
    findings[3, FINDINGS.index("Edema")] = 2.0
    root = write_chexpert(tmp_path / "chexpert", chexpert_paths(), findings)
    with pytest.raises(DataError, match=r"'Edema', row 3"):
        create_dataset("chexpert", "val", root=root)


def test_chexpert_missing_csv_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"train\.csv.*stanfordmlgroup"):
        create_dataset("chexpert", "train", root=tmp_path)


# ---- PatchCamelyon -----------------------------------------------------------------------------------------------

@pytest.fixture
def pcam_root(tmp_path):
    root = tmp_path / "pcam"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 12), ("valid", 4), ("test", 5)):
        stem = root / f"camelyonpatch_level_2_split_{name}"
        with h5py.File(f"{stem}_x.h5", "w") as f:
            f.create_dataset("x", data=rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), chunks=(1, 16, 16, 3))
        with h5py.File(f"{stem}_y.h5", "w") as f:
            f.create_dataset("y", data=(np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1))
    return root


def test_pcam_official_splits_are_read_lazily_from_h5(pcam_root):
    got = {s: create_dataset("pcam", s, root=pcam_root) for s in SPLITS}
    assert [len(got[s]) for s in SPLITS] == [12, 4, 5]
    assert got["test"].labels.tolist() == [0, 1, 0, 1, 0]
    assert isinstance(got["train"].images, H5Images)
    with h5py.File(pcam_root / "camelyonpatch_level_2_split_valid_x.h5", "r") as f:
        np.testing.assert_array_equal(got["val"].load_image(3), f["x"][3])
    info = got["val"].info
    assert (info.task, info.num_outputs, info.target_metric, info.channels) == ("multiclass", 2, "roc_auc", 3)
    assert info.mean == (0.6999, 0.5384, 0.6911) and info.std == (0.2309, 0.2744, 0.2087)


def test_pcam_h5_images_pickle_without_pixels_and_reopen(pcam_root):
    ds = create_dataset("pcam", "train", root=pcam_root)
    ds.load_image(0)  # opens the file in this process
    blob = pickle.dumps(ds.images)
    assert len(blob) < 1000
    np.testing.assert_array_equal(pickle.loads(blob)[7], ds.load_image(7))


def test_pcam_caches_at_native_size(pcam_root, tmp_path):
    ds = create_dataset("pcam", "val", root=pcam_root)
    fast = cached(ds, size=None, cache_dir=tmp_path / "cache", workers=0)
    assert fast.images.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(fast.images[2], ds.load_image(2))
    np.testing.assert_array_equal(fast.labels, ds.labels)


def test_pcam_missing_files_say_layout_and_source(tmp_path):
    with pytest.raises(DataError, match=r"camelyonpatch_level_2_split_test_x\.h5.*basveeling/pcam"):
        create_dataset("pcam", "test", root=tmp_path)
