"""Readers of the sources in their upstream layouts: labelled candidate rows, decoded once.

Kermany's chest-xray-pneumonia (children), ieee8023's covid-chestxray-dataset, NIH's
ChestX-ray14 (adults and children) and Hannover Medical School's COVID-19 image repository
(adults); and two generic layouts for any other set, described by params alone: `folders`
(<root>/<class>/<image>, the ImageFolder convention) and `table` (a CSV naming each image's path,
label and patient). Each row carries its source and age group, for the per-source metrics.

merge builds the manifest from them, external builds the extra evaluation sets.
"""

import os
import re
from pathlib import Path

import pandas as pd

from covidxray.data.folders import (folder_files, listing, misnamed, named_folder, present,
                                    unreadable)
from covidxray.data.images import open_rgb
from covidxray.data.tables import listed_file, listed_twice, read_rows
from covidxray.errors import PipelineError
from covidxray.files import sha256

# metadata.csv's columns: upstream renamed Patientid patientid after 2020-03-18, and added others
COVID_COLUMNS = (("Patientid", "patientid"), "age", "finding", "view", "modality", "location",
                 "filename")
UNLABELLED = ("todo",)  # findings upstream had not labelled yet (2020-06-22 rows)
NIH_TABLES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv", "sample_labels.csv")
NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "View Position")
NIH_LABELS = {"Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
              "Fibrosis", "Hernia", "Infiltration", "Mass", "No Finding", "Nodule",
              "Pleural_Thickening", "Pneumonia", "Pneumothorax"}  # ChestX-ray14's fifteen
HANNOVER_COLUMNS = ("patient_id", "image_id", "projection")
HANNOVER_VIEWS = ("ap", "pa")  # data.csv's projection, lower case upstream
MAX_AGE = 120  # years; NIH lists a few patients older, mistakes upstream
ADULT_AGE = 18
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
            for path in folder_files(named_folder(root, Path(split) / folder, key, split),
                                     skipped):
                label = kermany_label(folder, path.name)
                if label is None:
                    skipped.append({"path": str(path),
                                    "reason": "file name gives no class/patient"})
                else:
                    rows.append({"path": str(path), "class": label[0],  # ages 1 to 5
                                 "patient": f"kermany:{label[1]}", "source": "kermany",
                                 "age_group": "child"})
    return rows


def folders_candidates(root, spec, skipped, key):
    """Rows of <root>/<folder>/<image> for each folder that spec.findings maps to a class. The
    patient is spec.patient's group in the file name; without one, each image is its own."""
    rows, source = [], spec.sources[0]
    for folder, cls in spec.findings.items():
        for path in folder_files(named_folder(root, folder, f"{key}.findings", folder),
                                 skipped):
            match = spec.patient.search(path.name) if spec.patient else None
            if spec.patient and not (match and match.group(1)):
                skipped.append({"path": str(path), "reason": "file name gives no patient"
                                f" (no match for {key}.patient {spec.patient.pattern})"})
                continue
            patient = match.group(1) if match else f"{folder}/{path.name}"
            rows.append({"path": str(path), "class": cls, "patient": f"{source}:{patient}",
                         "source": source, "age_group": spec.age_group})
    return rows


def table_candidates(table, spec, skipped):
    """Rows of a CSV whose columns (spec.columns) name each image's path, relative to
    spec.images (default: the CSV's folder), its label, patient and optionally source and age.
    A row is a candidate when its label is a key of spec.findings and its source one of
    spec.sources; a row without a label, source, path or patient, or with a path outside the
    images folder, is left out with its line and the reason, as is a file that is not there."""
    rows, columns = [], spec.columns
    images = Path(spec.images) if spec.images else Path(table).parent
    for record in read_rows(table, tuple(dict.fromkeys(columns.values())), skipped):
        value = {role: record[column] for role, column in columns.items()}
        value.setdefault("source", spec.sources[0])
        where = f"{table}:{record['line']}"
        if empty := [columns[role] for role in ("label", "source") if not value[role]]:
            skipped.append({"path": where, "reason": f"no {empty[0]}"})
            continue
        if value["label"] not in spec.findings or value["source"] not in spec.sources:
            continue  # another label or source: not a candidate, by the params
        name, path = value["path"], images / value["path"]
        if empty := [columns[role] for role in ("path", "patient") if not value[role]]:
            skipped.append({"path": where, "reason": f"no {empty[0]}"})
        elif Path(name).is_absolute() or ".." in Path(name).parts:
            skipped.append({"path": where, "reason": f"{columns['path']} {name!r} is not a path"
                                                     f" inside {images}"})
        elif listed_file(path, table, record["line"], skipped):
            age = age_group(years(value["age"])) if "age" in value else spec.age_group
            rows.append({"path": str(path), "class": spec.findings[value["label"]],
                         "patient": f"{value['source']}:{value['patient']}",
                         "source": value["source"], "age_group": age})
    return rows


def covid_candidates(root, spec, skipped):
    """Rows of <root>/metadata.csv (the covid-chestxray-dataset layout, in its schema of
    2020-03-18 or of later snapshots) of spec's modality and views whose finding is a key of
    spec.findings, labelled with its value (a class), of source spec.sources[0]; `location` is
    each image's site. Patient ids are upstream's one numbering, whatever the snapshot. A row
    not labelled yet (`todo`), or a later row of a file listed twice, is left out with its line."""
    rows, metadata, listed = [], Path(root) / "metadata.csv", {}
    for record in read_rows(metadata, COVID_COLUMNS, skipped):
        if record["modality"] != spec.modality or record["view"] not in spec.views:
            continue  # another modality or view: not a candidate, by the params
        if record["finding"] in UNLABELLED:
            skipped.append({"path": f"{metadata}:{record['line']}", "reason":
                            f"finding {record['finding']!r}: not labelled upstream yet"})
            continue
        if record["finding"] not in spec.findings:
            continue  # another finding: not a candidate, by the params
        name, patient = record["filename"], record["Patientid"]
        path = Path(root) / "images" / name
        if not patient or not name or Path(name).name != name:
            skipped.append({"path": f"{metadata}:{record['line']}",
                            "reason": "no Patientid" if not patient else
                            f"filename {name!r} is not a file name in images/"})
        elif listed_twice(listed, name, metadata, record["line"], skipped):
            continue  # the first row of a file decides
        elif listed_file(path, metadata, record["line"], skipped):
            age = years(record["age"])
            rows.append({"path": str(path), "class": spec.findings[record["finding"]],
                         "patient": f"covid:{patient}", "source": spec.sources[0],
                         "age_group": age_group(age), "site": record["location"].strip()})
    return rows


def years(text):
    """An age field (`58`, NIH's older `058Y`) as whole years, or None if it is not one."""
    digits = text.strip().removesuffix("Y")
    return int(digits) if digits.isdigit() else None


def age_group(age):
    return "unknown" if age is None else "adult" if age >= ADULT_AGE else "child"


def nih_table(root):
    """The labels file of an NIH layout: the full download's, its 2020 release's or Kaggle's
    5% sample's."""
    for name in NIH_TABLES:
        if present(Path(root) / name):
            return Path(root) / name
    raise PipelineError(f"{root}: no NIH labels file ({', '.join(NIH_TABLES)})")


def nih_label(labels, findings):
    """(class, reason): a row's class from its `|`-separated labels, or why it has none."""
    unknown = [label for label in labels if label not in NIH_LABELS]
    classes = {findings[label] for label in labels if label in findings}
    if unknown:
        return None, f"unknown label(s) {', '.join(unknown)}"
    if len(classes) > 1:
        return None, (f"labels {'|'.join(labels)} map to several classes"
                      f" ({', '.join(sorted(classes))})")
    return (classes.pop() if classes else None), None


def image_folders(root):
    """The images/ folders at any depth under an NIH layout's root (a link to one too), by
    path; a folder on the way that cannot be read stops the stage (unreadable)."""
    found = []

    def refuse(err):
        raise unreadable(err.filename, err) from err

    for folder, subfolders, _ in os.walk(root, onerror=refuse):
        found += [Path(folder, name) for name in subfolders if name == "images"]
        subfolders[:] = [name for name in subfolders if name != "images"]  # listed apart
    return sorted(found)


def nih_candidates(root, findings, ages, views, skipped):
    """Rows of NIH ChestX-ray14 in any of its layouts: a labels file (nih_table) beside
    images/, images_0NN/images/ (the full download) or any other */images/ folder. A row is a
    candidate when a label maps to a class in `findings` and its age (in [low, high]) and view
    are wanted; a row with an unknown label, an age that is none or above 120, or a missing
    image is left out with its line and the reason, as is a later row of an image listed twice."""
    table = nih_table(root)
    images = {path.name: path for folder in image_folders(root) for path in listing(folder)}
    rows, listed = [], {}
    for record in read_rows(table, NIH_COLUMNS, skipped):
        where = f"{table}:{record['line']}"
        age, name = years(record["Patient Age"]), record["Image Index"]
        if listed_twice(listed, name, table, record["line"], skipped):
            continue
        cls, reason = nih_label(record["Finding Labels"].split("|"), findings)
        if reason is None and (age is None or age > MAX_AGE):
            reason = f"age {record['Patient Age']!r} is not a whole number of years up to {MAX_AGE}"
        if reason is None and not record["Patient ID"]:
            reason = "no Patient ID"
        if reason:
            skipped.append({"path": where, "reason": reason})
        elif cls is None or record["View Position"] not in views or not ages[0] <= age <= ages[1]:
            continue  # another finding, view or age: not a candidate, by the params
        elif name not in images:
            skipped.append({"path": str(Path(root) / "images" / name),
                            "reason": f"listed in {table.name} line {record['line']},"
                                      " file missing"})
        else:
            rows.append({"path": str(images[name]), "class": cls, "source": "nih",
                         "patient": f"nih:{record['Patient ID']}", "age_group": age_group(age)})
    return rows


def hannover_candidates(root, views, skipped):
    """Rows of <root>/data.csv with png/<image_id>.png (Hannover Medical School's COVID-19 image
    repository, every image COVID-19) whose projection, upper-cased, is one of `views`."""
    rows, table = [], Path(root) / "data.csv"
    for record in read_rows(table, HANNOVER_COLUMNS, skipped):
        patient, name, projection = record["patient_id"], record["image_id"], record["projection"]
        path = Path(root) / "png" / f"{name}.png"
        if not patient or not name or Path(name).name != name:
            skipped.append({"path": f"{table}:{record['line']}",
                            "reason": "no patient_id" if not patient else
                            f"image_id {name!r} is not a file name in png/"})
        elif projection.lower() not in HANNOVER_VIEWS:
            skipped.append({"path": f"{table}:{record['line']}",
                            "reason": f"projection {projection!r} is not ap or pa"})
        elif projection.upper() not in views:
            continue  # another view: not a candidate, by the params
        elif listed_file(path, table, record["line"], skipped):
            # age is redacted upstream; every patient is an adult, says the provenance
            rows.append({"path": str(path), "class": "covid", "patient": f"hannover:{patient}",
                         "source": "hannover", "age_group": "adult"})
    return rows


def candidates(layout, root, spec, skipped, where):
    """The candidate rows of a folder (a table's file, for `table`) in one of the layouts
    (layouts.LAYOUT_KEYS), kept by `spec` (layouts.Filter); `where` names the params that chose
    them."""
    if layout == "folders":
        return folders_candidates(root, spec, skipped, where)
    if layout == "table":
        return table_candidates(root, spec, skipped)
    if layout == "covid":
        return covid_candidates(root, spec, skipped)
    if layout == "nih":
        return nih_candidates(root, spec.findings, spec.ages, spec.views, skipped)
    if layout == "hannover":
        return hannover_candidates(root, spec.views, skipped)
    return kermany_candidates(root, spec.splits, skipped, key=f"{where}.splits")


def describe(rows, skipped):
    """Decode every candidate once: drop paths that are not UTF-8, unreadable files and
    byte-identical copies, with reasons; a copy labelled another class than the first says so
    (the first's label is kept)."""
    kept, duplicates, seen = [], [], {}
    for row in rows:
        if misnamed(row["path"], skipped):
            continue
        try:
            image = open_rgb(row["path"])
        except PipelineError as err:
            skipped.append({"path": row["path"], "reason": str(err).split(": ", 1)[1]})
            continue
        digest = sha256(row["path"])
        if digest in seen:
            first = seen[digest]
            copy = {"path": row["path"], "duplicate_of": first["path"]}
            if first["class"] != row["class"]:
                copy["conflict"] = (f"labelled {row['class']} here, {first['class']} there: the"
                                    " image keeps that label")
            duplicates.append(copy)
            continue
        seen[digest] = row
        kept.append({**row, "site": row.get("site", ""), "sha256": digest,
                     "width": image.width, "height": image.height})
    return pd.DataFrame(kept), duplicates
