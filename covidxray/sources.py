"""Readers of the sources in their upstream layouts: labelled candidate rows, decoded once.

merge builds the manifest from them, external builds the extra evaluation sets.
"""

import re
from pathlib import Path

import pandas as pd

from covidxray.common import PipelineError, open_rgb, sha256

COVID_COLUMNS = ("Patientid", "finding", "view", "modality", "filename")
# personN_bacteria_M.jpeg, personN_virus_M.jpeg; IM-NNNN-NNNN.jpeg, NORMAL2-IM-NNNN-NNNN.jpeg.
# Any extension: whether the file is an image is for the decoder to say.
PNEUMONIA_NAME = re.compile(r"^(person\d+)_(bacteria|virus)_\d+\.\w+$", re.IGNORECASE)
NORMAL_NAME = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+(?:-\d+)?\.\w+$", re.IGNORECASE)
CAUSE = {"bacteria": "bacterial", "virus": "viral"}


def kermany_label(folder, name):
    """(class, patient) from a Kaggle file's folder and name, or None if the name says neither."""
    if folder == "NORMAL" and (match := NORMAL_NAME.match(name)):
        return "normal", match.group(1)
    if folder == "PNEUMONIA" and (match := PNEUMONIA_NAME.match(name)):
        return CAUSE[match.group(2).lower()], match.group(1)
    return None


def kermany_candidates(root, splits, skipped, key="merge.kermany_splits"):
    """Labelled rows of <root>/<split>/{NORMAL,PNEUMONIA}/, the Kaggle layout."""
    rows = []
    for split in splits:
        for folder in ("NORMAL", "PNEUMONIA"):
            directory = Path(root) / split / folder
            if not directory.is_dir():
                raise PipelineError(f"{directory}: missing ({key} names {split!r})")
            for path in sorted(p for p in directory.iterdir() if p.is_file()):
                label = kermany_label(folder, path.name)
                if label is None:
                    skipped.append({"path": str(path), "reason": "file name gives no class/patient"})
                    continue
                rows.append({"path": str(path), "class": label[0], "patient": f"kermany:{label[1]}",
                             "source": "kermany"})
    return rows


def read_metadata(path):
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PipelineError(f"{path}: cannot read ({err})") from err
    missing = [c for c in COVID_COLUMNS if c not in table.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def covid_candidates(root, findings, modality, views, skipped):
    """Rows of <root>/metadata.csv (the covid-chestxray-dataset layout) of the given modality and
    views whose finding is a key of `findings`, labelled with its value (a class)."""
    table = read_metadata(Path(root) / "metadata.csv")
    keep = (
        table["finding"].isin(list(findings))
        & (table["modality"] == modality)
        & table["view"].isin(views)
    )
    rows = []
    for record in table[keep].itertuples():
        path = Path(root) / "images" / record.filename
        if not path.is_file():
            skipped.append({"path": str(path), "reason": "listed in metadata.csv, file missing"})
            continue
        rows.append({"path": str(path), "class": findings[record.finding],
                     "patient": f"covid:{record.Patientid}", "source": "covid-chestxray"})
    return rows


def describe(rows, skipped):
    """Decode every candidate once: drop unreadable files and byte-identical copies, with reasons."""
    kept, duplicates, seen = [], [], {}
    for row in rows:
        try:
            image = open_rgb(row["path"])
        except PipelineError as err:
            skipped.append({"path": row["path"], "reason": str(err).split(": ", 1)[1]})
            continue
        digest = sha256(row["path"])
        if digest in seen:
            duplicates.append({"path": row["path"], "duplicate_of": seen[digest]})
            continue
        seen[digest] = row["path"]
        kept.append({**row, "sha256": digest, "width": image.width, "height": image.height})
    return pd.DataFrame(kept), duplicates
