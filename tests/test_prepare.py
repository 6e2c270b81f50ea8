"""`medvit data prepare`: official download layouts (tiny generated fixtures) → the layout medvit's loaders read."""
from __future__ import annotations

import gzip

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvit.cli import PREPARABLE, main
from medvit.data import DataError, create_dataset
from medvit.data.prepare import PREPARERS, prepare, read_ph2_table

# (case, clinical diagnosis) of a tiny PH2 release: 7 cases → authors_split(7, 0.3): train 5, val 1, test 1
CASES = [("IMD002", 0), ("IMD003", 0), ("IMD004", 1), ("IMD006", 1), ("IMD008", 2), ("IMD009", 0), ("IMD010", 2)]
TXT_HEADER = ("||   Name   || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network | "
              "Dots/Globules | Streaks | Regression Areas | Blue-Whitish Veil ||  Colors  ||")


def ph2_release(root, cases=CASES, table="txt", size=(24, 18)):
    """The official PH2 layout: PH2Dataset/PH2 Dataset images/IMDxxx/{IMDxxx_Dermoscopic_Image,IMDxxx_lesion}
    BMPs (and the colour ROI folder, which medvit ignores), plus the diagnosis table."""
    base = root / "PH2Dataset"
    rng = np.random.default_rng(0)
    for i, (case, _) in enumerate(cases):
        folder = base / "PH2 Dataset images" / case
        (folder / f"{case}_Dermoscopic_Image").mkdir(parents=True)
        (folder / f"{case}_lesion").mkdir()
        (folder / f"{case}_roi").mkdir()
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"{case}_Dermoscopic_Image" / f"{case}.bmp")
        mask = np.zeros((size[1], size[0]), dtype=bool)
        mask[2:10 + i, 3:12] = True
        Image.fromarray(mask).save(folder / f"{case}_lesion" / f"{case}_lesion.bmp")  # 1-bit, as PH2 ships
        Image.fromarray(mask).save(folder / f"{case}_roi" / f"{case}_R1_Label4.bmp")
    if table == "txt":
        lines = [TXT_HEADER] + [f"|| {case} ||  {'Melanoma' if d == 2 and case == 'IMD008' else ''}  ||  {d}  || "
                                f"0 | T | A | A | A | A ||  4 5  ||" for case, d in cases]
        (base / "PH2_dataset.txt").write_text("\n".join(lines) + "\n")
    else:
        legend = [["Legends:"] + [None] * 6, ["Asymmetry: 0 - fully symmetric"] + [None] * 6] + [[None] * 7] * 10
        header = [["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
                   "Asymmetry\n(0/1/2)", "White"]]
        rows = [[case, None] + ["X" if d == k else None for k in range(3)] + [0, None] for case, d in cases]
        pd.DataFrame(legend + header + rows).to_excel(base / "PH2_dataset.xlsx", header=False, index=False)
    return base


def test_the_cli_lists_exactly_the_datasets_with_a_preparer():
    assert set(PREPARABLE) == set(PREPARERS)


@pytest.mark.parametrize("table", ["txt", "xlsx"])
def test_ph2_release_converts_and_loads_through_create_dataset(tmp_path, table):
    if table == "xlsx":
        pytest.importorskip("openpyxl")
    base = ph2_release(tmp_path / "download", table=table)
    out = tmp_path / "data" / "ph2"
    assert prepare("ph2", tmp_path / "download", out, log=lambda *a: None) == out
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{c}.png" for c, _ in CASES]
    csv = pd.read_csv(out / "ph2.csv")
    assert csv.to_dict("list") == {"image": [c for c, _ in CASES], "diagnosis": [d for _, d in CASES]}
    splits = {s: create_dataset("ph2", s, data_root=tmp_path / "data") for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [5, 1, 1]
    train = splits["train"]
    image, mask = train.load_image(0), train.load_mask(0)
    case = train.paths[0].split("/")[-1][:-4]
    source = base / "PH2 Dataset images" / case
    assert np.array_equal(image, np.asarray(Image.open(source / f"{case}_Dermoscopic_Image" / f"{case}.bmp")))
    assert np.array_equal(mask, np.asarray(Image.open(source / f"{case}_lesion" / f"{case}_lesion.bmp")))
    assert mask.any() and not mask.all()


def test_ph2_cli_prepares_into_the_data_root(tmp_path, monkeypatch, capsys):
    ph2_release(tmp_path / "download")
    monkeypatch.setenv("MEDVIT_DATA_ROOT", str(tmp_path / "data"))
    assert main(["data", "prepare", "ph2", str(tmp_path / "download" / "PH2Dataset")]) == 0
    out = capsys.readouterr().out
    assert "7 cases" in out and "train 5, val 1, test 1" in out
    assert len(create_dataset("ph2", "test")) == 1  # found through $MEDVIT_DATA_ROOT/ph2


def test_ph2_tables_give_the_clinical_diagnosis(tmp_path):
    base = ph2_release(tmp_path, cases=CASES[:3])
    assert read_ph2_table(base / "PH2_dataset.txt") == dict(CASES[:3])


def test_ph2_errors_name_the_file_and_the_official_source(tmp_path, monkeypatch, capsys):
    # no data at all: the loader's error says where PH2 comes from and how to convert it
    monkeypatch.setenv("MEDVIT_DATA_ROOT", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"fc\.up\.pt/addi/ph2.*medvit data prepare ph2|medvit data prepare ph2.*"
                                        r"fc\.up\.pt/addi/ph2"):
        create_dataset("ph2", "train")
    # the official release where medvit looks for its own layout: the error says to convert it
    base = ph2_release(tmp_path / "empty" / "ph2", cases=CASES[:2])
    with pytest.raises(DataError, match="medvit data prepare ph2"):
        create_dataset("ph2", "train")
    # a case without its lesion mask: one line naming the file, exit status 1
    (base / "PH2 Dataset images" / "IMD003" / "IMD003_lesion" / "IMD003_lesion.bmp").unlink()
    assert main(["data", "prepare", "ph2", str(base), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medvit: ") and err.count("\n") == 1 and "IMD003_lesion.bmp" in err
    # a table row without a case folder
    ph2_release(tmp_path / "other", cases=CASES[:2])
    table = tmp_path / "other" / "PH2Dataset" / "PH2_dataset.txt"
    table.write_text(table.read_text() + "|| IMD999 ||  ||  1  || 0 | T | A | A | A | A ||  4  ||\n")
    with pytest.raises(DataError, match="IMD999"):
        prepare("ph2", tmp_path / "other", tmp_path / "out2")


def test_ph2_refuses_an_output_folder_holding_other_images(tmp_path):
    ph2_release(tmp_path / "download", cases=CASES[:2])
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "IMD002.jpg").write_bytes(b"old")
    with pytest.raises(DataError, match="IMD002.jpg"):
        prepare("ph2", tmp_path / "download", tmp_path / "out")


def pcam_download(folder, n=6):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("valid", n // 2), ("test", n // 2)):
        for part, data in (("x", rng.integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)),
                           ("y", rng.integers(0, 2, (count, 1, 1, 1), dtype=np.uint8))):
            h5 = folder / f"camelyonpatch_level_2_split_{split}_{part}.h5"
            with h5py.File(h5, "w") as f:
                f.create_dataset(part, data=data)
            with open(h5, "rb") as src, gzip.open(f"{h5}.gz", "wb") as dst:
                dst.write(src.read())
            h5.unlink()


def test_pcam_gzipped_download_unpacks_and_loads(tmp_path):
    pcam_download(tmp_path / "download")
    with pytest.raises(DataError, match="gzipped.*medvit data prepare pcam"):
        create_dataset("pcam", "train", root=tmp_path / "download")
    out = prepare("pcam", tmp_path / "download", tmp_path / "pcam", log=lambda *a: None)
    train = create_dataset("pcam", "train", root=out)
    assert len(train) == 6 and train.load_image(0).shape == (96, 96, 3)
    assert not list(out.glob("*.part"))


def test_pcam_truncated_download_is_a_clear_error(tmp_path):
    pcam_download(tmp_path / "download")
    gz = tmp_path / "download" / "camelyonpatch_level_2_split_valid_x.h5.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(DataError, match=r"split_valid_x\.h5\.gz.*truncated or corrupt"):
        prepare("pcam", tmp_path / "download", tmp_path / "pcam", log=lambda *a: None)
    assert not (tmp_path / "pcam" / "camelyonpatch_level_2_split_valid_x.h5").exists()


def cbis_download(folder):
    """TCIA's CBIS-DDSM: the case-description CSVs and the NBIA retriever's DICOM tree, whose folder names (dates,
    series descriptions) are not the UIDs of the CSV's 'image file path'; ROI series beside the full mammograms."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rows = {"mass_case_description_train_set.csv": [("P_00001", "LEFT", "CC", "MALIGNANT"),
                                                     ("P_00001", "LEFT", "CC", "BENIGN"),  # 2nd abnormality
                                                     ("P_00004", "RIGHT", "MLO", "BENIGN"),
                                                     ("P_00009", "LEFT", "MLO", "BENIGN_WITHOUT_CALLBACK")],
            "mass_case_description_test_set.csv": [("P_00016", "LEFT", "CC", "MALIGNANT")],
            "calc_case_description_train_set.csv": [("P_00005", "RIGHT", "CC", "MALIGNANT"),
                                                    ("P_00007", "LEFT", "MLO", "BENIGN")],
            "calc_case_description_test_set.csv": [("P_00038", "LEFT", "CC", "BENIGN")]}
    rng = np.random.default_rng(0)
    pixels = {}
    for csv, cases in rows.items():
        kind = "Mass" if csv.startswith("mass") else "Calc"
        part = "Training" if "train" in csv else "Test"
        paths = {}
        for patient, side, view, _ in cases:
            subject = f"{kind}-{part}_{patient}_{side}_{view}"
            if subject not in paths:
                study, series = generate_uid(), generate_uid()
                paths[subject] = f"{subject}/{study}/{series}/000000.dcm"
                for name, uid, roi in ((subject, series, False), (f"{subject}_1", generate_uid(), True)):
                    ds = pydicom.Dataset()
                    ds.file_meta = FileMetaDataset()
                    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = name, study, uid
                    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
                    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    data = rng.integers(0, 4096, (20, 12), dtype=np.uint16)
                    ds.Rows, ds.Columns = data.shape
                    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
                    ds.PixelData = data.tobytes()
                    target = (folder / "CBIS-DDSM" / name / "07-20-2016-DDSM-74994" /
                              f"1.000000-{'ROI mask images' if roi else 'full mammogram images'}-24515" / "1-1.dcm")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    ds.save_as(target, enforce_file_format=True)
                    if not roi:
                        pixels[paths[subject]] = data
        pd.DataFrame({"patient_id": [c[0] for c in cases], "left or right breast": [c[1] for c in cases],
                      "image view": [c[2] for c in cases], "pathology": [c[3] for c in cases],
                      "image file path": [paths[f"{kind}-{part}_{c[0]}_{c[1]}_{c[2]}"] for c in cases]}
                     ).to_csv(folder / csv, index=False)
    return pixels


def test_cbis_ddsm_dicom_download_converts_to_the_csv_paths_and_loads(tmp_path):
    pixels = cbis_download(tmp_path / "download")
    out = prepare("cbis_ddsm", tmp_path / "download", tmp_path / "cbis", log=lambda *a: None)
    test = create_dataset("cbis_ddsm", "test", root=out)
    assert len(test) == 2 and sorted(test.labels.tolist()) == [0, 1]
    for csv_path, data in pixels.items():
        png = np.asarray(Image.open(out / csv_path.replace(".dcm", ".png")))
        expected = np.round((data - data.min()) / (data.max() - data.min()) * 255).astype(np.uint8)
        assert png.dtype == np.uint8 and np.array_equal(png, expected)
    train, val = create_dataset("cbis_ddsm", "train", root=out), create_dataset("cbis_ddsm", "val", root=out)
    assert len(train) + len(val) == 5  # 6 train rows, P_00001's two abnormalities on one image
    assert all(len(np.asarray(Image.open(p))) == 20 for p in train.paths)


def test_cbis_ddsm_without_the_csvs_says_where_to_get_them(tmp_path):
    (tmp_path / "download").mkdir()
    with pytest.raises(DataError, match=r"mass_case_description_train_set\.csv.*TCIA"):
        prepare("cbis_ddsm", tmp_path / "download", tmp_path / "cbis")
