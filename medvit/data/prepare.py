"""``medvit data prepare <dataset> <folder>``: the official download of a dataset → the layout its loader reads.

Most registered datasets are read in the layout their publishers ship (unzipped); three are not, and are
converted here, once:

- ``ph2``: the PH2 release (``PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp``,
  ``IMDxxx_lesion/IMDxxx_lesion.bmp`` and the diagnosis table ``PH2_dataset.txt`` or ``PH2_dataset.xlsx``)
  → ``images/IMDxxx.png`` (lossless), ``masks/IMDxxx_lesion.png`` (0/255) and ``ph2.csv`` (image, diagnosis:
  0 common nevus, 1 atypical nevus, 2 melanoma — the table's clinical diagnosis).
- ``pcam``: the gzipped h5 files of PatchCamelyon (``camelyonpatch_level_2_split_*_{x,y}.h5.gz``) → the
  ``.h5`` files (h5py cannot read gzip).
- ``cbis_ddsm``: TCIA's CBIS-DDSM download (DICOM, in folders named by the NBIA Data Retriever, which are
  not the paths the case-description CSVs give) → each full mammogram the CSVs list as an 8-bit PNG at the
  CSV's ``image file path`` with the suffix ``.png``, beside the CSVs.

Each preparer writes into ``out`` (default ``$MEDVIT_DATA_ROOT/<dataset>``) and :func:`prepare` then loads
every split through :func:`medvit.data.create_dataset`, so a conversion that the loader cannot read fails here.
"""
from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .base import SPLITS, DataError
from .registry import DATA_ROOT_ENV, create_dataset, data_root

# --------------------------------------------------------------------------------------------------- PH2

PH2_SOURCE = ("the PH2 database of the ADDI project, Universidade do Porto (https://www.fc.up.pt/addi/ph2%20database.html; "
              "free for research and benchmarking, on request)")
PH2_IMAGES = "PH2 Dataset images"
PH2_TABLES = ("PH2_dataset.txt", "PH2_dataset.xlsx")  # the txt needs no Excel reader: preferred
PH2_DIAGNOSES = ("Common Nevus", "Atypical Nevus", "Melanoma")  # clinical diagnosis 0, 1, 2
PH2_CASE = re.compile(r"IMD\d+")
PH2_RELEASE = (f"the unzipped official release: a folder (PH2Dataset) holding '{PH2_IMAGES}/IMDxxx/"
               "IMDxxx_Dermoscopic_Image/IMDxxx.bmp', 'IMDxxx_lesion/IMDxxx_lesion.bmp' and PH2_dataset.txt "
               "or PH2_dataset.xlsx")


def find_ph2_release(folder: str | Path) -> tuple[Path, Path]:
    """(the ``PH2 Dataset images`` folder, the diagnosis table) of the release in ``folder``, its
    ``PH2Dataset`` subfolder, or the parent of ``folder`` when that is ``PH2 Dataset images`` itself."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"ph2: folder not found: {folder}. Expected {PH2_RELEASE}, from {PH2_SOURCE}.")
    candidates = [folder, folder / "PH2Dataset"] + ([folder.parent] if folder.name == PH2_IMAGES else [])
    for base in candidates:
        if (base / PH2_IMAGES).is_dir():
            tables = [base / t for t in PH2_TABLES if (base / t).is_file()]
            if not tables:
                raise DataError(f"ph2: no diagnosis table ({' or '.join(PH2_TABLES)}) in {base}, beside "
                                f"'{PH2_IMAGES}'. Expected {PH2_RELEASE}.")
            return base / PH2_IMAGES, tables[0]
    raise DataError(f"ph2: no '{PH2_IMAGES}' folder in {folder}" + ("" if folder.name == "PH2Dataset" else
                    f" nor in {folder / 'PH2Dataset'}") + f". Expected {PH2_RELEASE}, from {PH2_SOURCE}.")


def read_ph2_table(path: str | Path) -> dict[str, int]:
    """Case id → clinical diagnosis (0 common nevus, 1 atypical nevus, 2 melanoma) from ``PH2_dataset.txt``
    (``||``-separated, columns Name and Clinical Diagnosis) or ``PH2_dataset.xlsx`` (a legend, then a header
    row with Image Name and one X in Common Nevus / Atypical Nevus / Melanoma per case)."""
    path = Path(path)
    table = _ph2_xlsx(path) if path.suffix.lower() == ".xlsx" else _ph2_txt(path)
    if not table:
        raise DataError(f"{path}: no case rows (IMDxxx) found")
    return table


def _ph2_txt(path: Path) -> dict[str, int]:
    rows = [[cell.strip() for cell in line.split("||")] for line in path.read_text(errors="replace").splitlines()
            if "||" in line]
    header = next((r for r in rows if any(c.lower() == "name" for c in r)
                   and any(c.lower() == "clinical diagnosis" for c in r)), None)
    if header is None:
        raise DataError(f"{path}: no header row with the columns 'Name' and 'Clinical Diagnosis' "
                        "(expected the ||-separated table of the PH2 release)")
    name = [c.lower() for c in header].index("name")
    diagnosis = [c.lower() for c in header].index("clinical diagnosis")
    table = {}
    for r in rows:
        if len(r) > max(name, diagnosis) and PH2_CASE.fullmatch(r[name]):
            if r[diagnosis] not in ("0", "1", "2"):
                raise DataError(f"{path}: case {r[name]}: Clinical Diagnosis {r[diagnosis]!r} is not 0, 1 or 2")
            table[r[name]] = int(r[diagnosis])
    return table


def _ph2_xlsx(path: Path) -> dict[str, int]:
    try:
        import openpyxl  # noqa: F401  (pandas' Excel reader; optional: medvit[data])
    except ImportError:
        raise ImportError(f"reading {path.name} needs openpyxl: pip install 'medvit[data]' (or give the release's "
                          "PH2_dataset.txt, which needs nothing more)", name="openpyxl") from None
    try:
        raw = pd.read_excel(path, header=None, dtype=str)
    except Exception as err:
        raise DataError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    cells = raw.fillna("").map(lambda v: str(v).strip())
    header_rows = [i for i in range(len(cells)) if "Image Name" in set(cells.iloc[i])]
    if not header_rows:
        raise DataError(f"{path}: no header row with an 'Image Name' cell (expected the PH2 release's table)")
    header = list(cells.iloc[header_rows[0]])
    missing = [c for c in ("Image Name", *PH2_DIAGNOSES) if c not in header]
    if missing:
        raise DataError(f"{path}: header row {header_rows[0] + 1} lacks the column(s) {missing}")
    table = {}
    for _, row in cells.iloc[header_rows[0] + 1:].iterrows():
        case = row.iloc[header.index("Image Name")]
        if not PH2_CASE.fullmatch(case):
            continue
        marked = [d for d, column in enumerate(PH2_DIAGNOSES) if row.iloc[header.index(column)].upper() == "X"]
        if len(marked) != 1:
            raise DataError(f"{path}: case {case} has {len(marked)} X marks among {list(PH2_DIAGNOSES)}; "
                            "expected exactly one")
        table[case] = marked[0]
    return table


def prepare_ph2(source: str | Path, out: str | Path, log=print) -> Path:
    """Convert the PH2 release in ``source`` into ``out``: ``images/<id>.png``, ``masks/<id>_lesion.png``
    (0/255) and ``ph2.csv`` (image, diagnosis)."""
    images_dir, table_file = find_ph2_release(source)
    table = read_ph2_table(table_file)
    cases = sorted(p.name for p in images_dir.iterdir() if p.is_dir() and PH2_CASE.fullmatch(p.name))
    if not cases:
        raise DataError(f"ph2: no case folders (IMDxxx) in {images_dir}. Expected {PH2_RELEASE}.")
    unlisted, absent = sorted(set(cases) - set(table)), sorted(set(table) - set(cases))
    if unlisted or absent:
        raise DataError(f"ph2: {table_file} and {images_dir} disagree: case folders not in the table "
                        f"{unlisted[:5]}, table rows without a folder {absent[:5]}")
    files = {c: (images_dir / c / f"{c}_Dermoscopic_Image" / f"{c}.bmp", images_dir / c / f"{c}_lesion" /
                 f"{c}_lesion.bmp") for c in cases}
    missing = [str(f) for pair in files.values() for f in pair if not f.is_file()]
    if missing:
        raise DataError(f"ph2: {len(missing)} file(s) of the release not found, e.g. {missing[:3]}. "
                        f"Expected {PH2_RELEASE}.")
    out = Path(out).expanduser()
    _require_empty_of_others(out / "images", {f"{c}.png" for c in cases})
    _require_empty_of_others(out / "masks", {f"{c}_lesion.png" for c in cases})
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for case in tqdm(cases, desc=f"ph2: converting {len(cases)} cases"):
        image_file, mask_file = files[case]
        image, mask = _open(image_file, "RGB"), _open(mask_file, "L")
        if image.size != mask.size:
            raise DataError(f"ph2: {image_file} is {image.size} (w, h) but its mask {mask_file} is {mask.size}")
        image.save(out / "images" / f"{case}.png")
        Image.fromarray(np.where(np.asarray(mask) > 127, 255, 0).astype(np.uint8)).save(
            out / "masks" / f"{case}_lesion.png")
    pd.DataFrame({"image": cases, "diagnosis": [table[c] for c in cases]}).to_csv(out / "ph2.csv", index=False)
    counts = np.bincount([table[c] for c in cases], minlength=3)
    log(f"ph2: {len(cases)} cases from {images_dir} and {table_file.name} → {out} "
        f"({', '.join(f'{n} {d.lower()}' for n, d in zip(counts, PH2_DIAGNOSES))})")
    return out


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except Exception as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from None


def _require_empty_of_others(folder: Path, ours: set[str]) -> None:
    """A DataError when ``folder`` holds files other than ``ours`` (the loader would read them too)."""
    others = sorted(p.name for p in folder.iterdir() if p.name not in ours) if folder.is_dir() else []
    if others:
        raise DataError(f"{folder} already holds {len(others)} other file(s), e.g. {others[:3]}, which medvit "
                        "would read as part of the dataset: prepare into an empty folder (--out)")


# -------------------------------------------------------------------------------------------------- PCam

PCAM_SOURCE = "https://github.com/basveeling/pcam (Zenodo record 2546921)"
PCAM_FILES = tuple(f"camelyonpatch_level_2_split_{s}_{xy}.h5" for s in ("train", "valid", "test") for xy in "xy")


def prepare_pcam(source: str | Path, out: str | Path, log=print) -> Path:
    """Gunzip PCam's ``camelyonpatch_level_2_split_<train|valid|test>_<x|y>.h5.gz`` from ``source`` into ``out``
    (a file already unpacked in ``out`` is kept)."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.is_dir():
        raise DataError(f"pcam: folder not found: {source}. Expected the downloaded {PCAM_FILES[0]}.gz and its "
                        f"5 siblings, from {PCAM_SOURCE}.")
    todo = [name for name in PCAM_FILES if not (out / name).is_file()]
    missing = [f"{name}.gz" for name in todo if not (source / f"{name}.gz").is_file()]
    if missing:
        raise DataError(f"pcam: not found in {source}: {missing}. Download them from {PCAM_SOURCE}.")
    out.mkdir(parents=True, exist_ok=True)
    for name in todo:
        gz, part = source / f"{name}.gz", out / f"{name}.part"
        try:
            with gzip.open(gz, "rb") as src, open(part, "wb") as dst, \
                    tqdm(total=gz.stat().st_size, unit="B", unit_scale=True, desc=f"pcam: {gz.name}") as bar:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
                    bar.n = src.fileobj.tell()  # compressed bytes read
                    bar.refresh()
        except (OSError, EOFError) as err:
            part.unlink(missing_ok=True)
            raise DataError(f"pcam: cannot unpack {gz} ({type(err).__name__}: {err}): a truncated or corrupt "
                            f"download; download it again from {PCAM_SOURCE}") from None
        part.replace(out / name)
    log(f"pcam: {len(todo)} file(s) unpacked from {source} → {out}" + (
        f" ({len(PCAM_FILES) - len(todo)} already there)" if len(todo) < len(PCAM_FILES) else ""))
    return out


# --------------------------------------------------------------------------------------------- CBIS-DDSM

CBIS_SOURCE = "TCIA (https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY)"
CBIS_CSVS = tuple(f"{kind}_case_description_{part}_set.csv" for kind in ("mass", "calc") for part in ("train", "test"))
CBIS_RELEASE = ("a folder holding the case-description CSVs (mass/calc_case_description_train/test_set.csv) and the "
                "DICOM download of the NBIA Data Retriever (CBIS-DDSM/<subject>/<study>/<series>/*.dcm)")


def prepare_cbis_ddsm(source: str | Path, out: str | Path, log=print) -> Path:
    """Convert the full mammograms listed in the CBIS-DDSM CSVs of ``source`` to 8-bit PNGs in ``out``.

    A CSV ``image file path`` is ``<subject>/<StudyInstanceUID>/<SeriesInstanceUID>/<file>.dcm``; the DICOM
    is found in the download as the file under a folder named ``<subject>`` whose header carries that
    SeriesInstanceUID (so both of the retriever's folder namings work). Pixels: MONOCHROME1 inverted, then
    scaled linearly from the image's own min..max to 0..255. The CSVs are copied beside the PNGs.
    """
    try:
        import pydicom  # optional: medvit[data]
    except ImportError:
        raise ImportError("converting CBIS-DDSM's DICOM files needs pydicom: pip install 'medvit[data]'",
                          name="pydicom") from None
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.is_dir():
        raise DataError(f"cbis_ddsm: folder not found: {source}. Expected {CBIS_RELEASE}, from {CBIS_SOURCE}.")
    csvs = [source / name for name in CBIS_CSVS if (source / name).is_file()]
    if not csvs:
        raise DataError(f"cbis_ddsm: none of {list(CBIS_CSVS)} in {source}. Expected {CBIS_RELEASE}, from "
                        f"{CBIS_SOURCE}.")
    wanted: dict[str, str] = {}  # CSV image file path → its subject folder
    for csv in csvs:
        df = pd.read_csv(csv)
        if "image file path" not in df.columns:
            raise DataError(f"{csv}: no column 'image file path'; found {list(df.columns)}")
        for path in df["image file path"].astype(str).str.strip():
            parts = path.split("/")
            if len(parts) != 4:
                raise DataError(f"{csv}: image file path {path!r} is not <subject>/<study>/<series>/<file>")
            wanted[path] = parts[0]
    subjects = {p.name: p for p in source.rglob("*") if p.is_dir() and p.name in set(wanted.values())}
    out.mkdir(parents=True, exist_ok=True)
    for path, subject in tqdm(sorted(wanted.items()), desc=f"cbis_ddsm: converting {len(wanted)} mammograms"):
        series = path.split("/")[2]
        if subject not in subjects:
            raise DataError(f"cbis_ddsm: no folder {subject!r} under {source} for {path}. Expected {CBIS_RELEASE}.")
        matches = [f for f in sorted(subjects[subject].rglob("*.dcm"))
                   if str(pydicom.dcmread(f, stop_before_pixels=True).get("SeriesInstanceUID", "")) == series]
        if len(matches) != 1:
            raise DataError(f"cbis_ddsm: {len(matches)} DICOM files under {subjects[subject]} have SeriesInstanceUID "
                            f"{series} (for {path}); expected one")
        target = out / Path(path).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dicom_to_uint8(pydicom.dcmread(matches[0]), matches[0])).save(target)
    for csv in csvs:
        if csv.resolve() != (out / csv.name).resolve():
            shutil.copy2(csv, out / csv.name)
    log(f"cbis_ddsm: {len(wanted)} full mammograms from {len(csvs)} CSV(s) in {source} → {out}")
    return out


def dicom_to_uint8(ds, path: Path) -> np.ndarray:
    """A DICOM image as uint8 HW: MONOCHROME1 inverted, then min..max scaled to 0..255."""
    try:
        pixels = ds.pixel_array.astype(np.float64)
    except Exception as err:
        raise DataError(f"cannot decode the pixels of {path}: {type(err).__name__}: {err}") from None
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected one grayscale image, got pixel array of shape {pixels.shape}")
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = pixels.max() - pixels
    low, high = pixels.min(), pixels.max()
    scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
    return np.round(scaled).astype(np.uint8)


# --------------------------------------------------------------------------------------------------- all

PREPARERS: dict[str, Callable[..., Path]] = {"ph2": prepare_ph2, "pcam": prepare_pcam, "cbis_ddsm": prepare_cbis_ddsm}


def prepare(dataset: str, source: str | Path, out: str | Path | None = None, log=print) -> Path:
    """Convert ``dataset``'s official download in ``source`` into ``out`` (default ``$MEDVIT_DATA_ROOT/<dataset>``),
    then load each split through ``create_dataset`` and report its size."""
    if dataset not in PREPARERS:
        raise DataError(f"no preparation for dataset {dataset!r}; datasets with one: {', '.join(PREPARERS)} "
                        "(the others are read as their publishers ship them, unzipped)")
    if out is None:
        out = data_root(dataset)
        if out is None:
            raise DataError(f"{dataset}: no output folder: pass --out DIR, or set ${DATA_ROOT_ENV} (the data then "
                            f"goes to ${DATA_ROOT_ENV}/{dataset}, where medvit looks for it)")
    out = PREPARERS[dataset](source, out, log=log)
    sizes = {split: len(create_dataset(dataset, split, root=out)) for split in SPLITS}
    log(f"{dataset}: medvit reads {out}: " + ", ".join(f"{s} {n}" for s, n in sizes.items()) +
        f" (create_dataset({dataset!r}, split, root={str(out)!r}), or ${DATA_ROOT_ENV}={out.parent}"
        + ("" if out.name == dataset else f" with the folder named {dataset}") + ")")
    return out
