"""external: read and decode the extra evaluation sets listed under `external` in params.yaml.

Each set is a folder in one of the four upstream layouts, or your own data in one of two
generic layouts (docs/data.md#your-own-data-folders-and-table-layouts):
- `covid`: metadata.csv and images/, as ieee8023/covid-chestxray-dataset; rows are kept by
  `modality` and `views`, and `findings` maps each kept finding to a class;
- `kaggle`: <split>/NORMAL and <split>/PNEUMONIA for each of `splits`, labelled by file name, as
  the chest-xray-pneumonia set;
- `nih`: a labels file (Data_Entry_2017.csv or Kaggle's sample_labels.csv) and images, as NIH
  ChestX-ray14; rows are kept by `views` and age range `ages`, `findings` maps labels to classes;
- `hannover`: data.csv and png/, as Hannover Medical School's COVID-19 image repository; rows are
  kept by `views` (AP, PA), every image is COVID-19;
- `folders`: <path>/<folder>/<image>, `findings` mapping each folder read to a class, the
  patient taken from the file name by the regular expression `patient` (without it each image
  is its own patient);
- `table`: a CSV at `path` whose `columns` name each image's path (relative to `images`), label,
  patient and optionally source and age; `findings` maps labels to classes.
An image the manifest already holds (same bytes) or of a patient in the manifest is left out, with
the reason, so a set scores images and patients the model never saw.

Writes data/external/<set>.csv (path, class, patient, source, age_group) and <set>.npz
(`images`, uint8, in that order), and metrics/detail/data_external.json: per set, images per
class and every file left out.
"""

import shutil
import sys

import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.images import cores, load_images
from covidxray.data.provenance import write_arrays
from covidxray.data.sources import candidates, describe
from covidxray.files import write_json, write_table
from covidxray.paths import DETAIL, EXTERNAL, MANIFEST
from covidxray.runner import cli

COLUMNS = ["path", "class", "patient", "source", "age_group", "site"]


def unseen(images, manifest, skipped):
    """The rows whose bytes and patient the manifest does not hold; the others go to skipped."""
    known_bytes = dict(zip(manifest["sha256"], manifest["path"]))
    known_patients = set(manifest["patient"])
    keep = []
    for row in images.itertuples():
        if row.sha256 in known_bytes:
            skipped.append({"path": row.path, "reason": "same bytes as manifest image"
                                                       f" {known_bytes[row.sha256]}"})
        elif row.patient in known_patients:
            skipped.append({"path": row.path,
                            "reason": f"patient {row.patient} is in the manifest"})
        else:
            keep.append(row.Index)
    return images.loc[keep, COLUMNS]


def read_set(spec, manifest):
    """An external set's rows that the manifest does not hold, and what was left out, and why."""
    skipped = []
    found = candidates(spec.layout, spec.path, spec.filter, skipped, f"external.{spec.name}")
    images, duplicates = describe(found, skipped)
    skipped += [{"path": d["path"], "reason": f"same bytes as {d['duplicate_of']}"}
                for d in duplicates]
    rows = unseen(images, manifest, skipped) if len(images) else pd.DataFrame(columns=COLUMNS)
    return rows, skipped


def main():
    params = load_params()
    manifest = pd.read_csv(MANIFEST)
    shutil.rmtree(EXTERNAL, ignore_errors=True)  # a set dropped from params leaves no files
    EXTERNAL.mkdir(parents=True)
    report = {}
    for name, spec in params.external.items():
        rows, skipped = read_set(spec, manifest)
        write_table(rows, EXTERNAL / f"{name}.csv")
        # preprocessed as prepare does, so that the sets look like the training data
        images = load_images(rows["path"], params.image_size, params.preprocess, cores())
        write_arrays(EXTERNAL / f"{name}.npz", images=images)
        report[name] = {"n": len(rows), "classes": rows["class"].value_counts().to_dict(),
                        "n_skipped": len(skipped), "skipped": skipped}
        print(f"external: {name}: {len(rows)} images {report[name]['classes']},"
              f" {len(skipped)} left out (see metrics/detail/data_external.json)")
        if not len(rows):  # a valid set that scores nothing: empty folders, say
            print(f"warning: external: {name}: no image to score ({len(skipped)} left out):"
                  f" every task's scores on it will be empty; check external.{name}'s path and"
                  " filters", file=sys.stderr)
    write_json(DETAIL / "data_external.json", report)


if __name__ == "__main__":
    cli(main)()
