"""external: read and decode the extra evaluation sets listed under `external` in params.yaml.

Each set is a folder in one of the four upstream layouts:
- `covid`: metadata.csv and images/, as ieee8023/covid-chestxray-dataset; rows are kept by
  `modality` and `views`, and `findings` maps each kept finding to a class;
- `kaggle`: <split>/NORMAL and <split>/PNEUMONIA for each of `splits`, labelled by file name, as
  the chest-xray-pneumonia set;
- `nih`: a labels file (Data_Entry_2017.csv or Kaggle's sample_labels.csv) and images, as NIH
  ChestX-ray14; rows are kept by `views` and age range `ages`, `findings` maps labels to classes;
- `hannover`: data.csv and png/, as Hannover Medical School's COVID-19 image repository; rows are
  kept by `views` (AP, PA), every image is COVID-19.
An image the manifest already holds (same bytes) or of a patient in the manifest is left out, with
the reason, so a set scores images and patients the model never saw.

Writes data/external/<set>.csv (path, class, patient, source, age_group) and <set>.npz (`images`, uint8,
in that order), and metrics/data_external.json: per set, images per class and every file left out.
"""

import shutil

import pandas as pd

from covidxray.common import (CLASSES, EXTERNAL, MANIFEST, METRICS, MIN_SIZE, PipelineError, cli,
                              cores, load_images, load_params, preprocess_params, whole_number,
                              write_arrays, write_json, write_table)
from covidxray.sources import (covid_candidates, describe, hannover_candidates,
                               kermany_candidates, nih_candidates)

COLUMNS = ["path", "class", "patient", "source", "age_group"]
LAYOUT_KEYS = {"covid": ("path", "modality", "views", "findings"), "kaggle": ("path", "splits"),
               "nih": ("path", "findings", "ages", "views"), "hannover": ("path", "views")}


def set_spec(name, spec):
    """A set's params, checked: a known layout, its keys present, known classes only."""
    where = f"params.yaml: external.{name}"
    layout = (spec or {}).get("layout")
    if layout not in LAYOUT_KEYS:
        raise PipelineError(f"{where}.layout must be one of {', '.join(LAYOUT_KEYS)};"
                            f" got {layout!r}")
    missing = [key for key in LAYOUT_KEYS[layout] if key not in spec]
    if missing:
        raise PipelineError(f"{where}: missing key(s) {', '.join(missing)} for layout {layout}")
    unknown = [c for c in (spec.get("findings") or {}).values() if c not in CLASSES]
    if unknown:
        raise PipelineError(f"{where}.findings maps to unknown class(es) {unknown};"
                            f" classes: {', '.join(CLASSES)}")
    return spec


def candidates(name, spec, skipped):
    if spec["layout"] == "covid":
        return covid_candidates(spec["path"], spec["findings"], spec["modality"], spec["views"],
                                skipped)
    if spec["layout"] == "nih":
        return nih_candidates(spec["path"], spec["findings"], spec["ages"], spec["views"],
                              skipped)
    if spec["layout"] == "hannover":
        return hannover_candidates(spec["path"], spec["views"], skipped)
    return kermany_candidates(spec["path"], spec["splits"], skipped,
                              key=f"external.{name}.splits")


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
            skipped.append({"path": row.path, "reason": f"patient {row.patient} is in the manifest"})
        else:
            keep.append(row.Index)
    return images.loc[keep, COLUMNS]


def read_set(name, spec, manifest):
    skipped = []
    images, duplicates = describe(candidates(name, set_spec(name, spec), skipped), skipped)
    skipped += [{"path": d["path"], "reason": f"same bytes as {d['duplicate_of']}"}
                for d in duplicates]
    rows = unseen(images, manifest, skipped) if len(images) else pd.DataFrame(columns=COLUMNS)
    return rows, skipped


def main():
    params = load_params()
    size = whole_number(params["image_size"], "image_size", MIN_SIZE)
    preprocess = preprocess_params(params)  # as prepare's, so the sets look like the training data
    manifest = pd.read_csv(MANIFEST)
    shutil.rmtree(EXTERNAL, ignore_errors=True)  # a set dropped from params leaves no files
    EXTERNAL.mkdir(parents=True)
    report = {}
    for name, spec in (params.get("external") or {}).items():
        rows, skipped = read_set(name, spec, manifest)
        write_table(rows, EXTERNAL / f"{name}.csv")
        images = load_images(rows["path"], size, **preprocess, workers=cores())
        write_arrays(EXTERNAL / f"{name}.npz", images=images)
        report[name] = {"n": len(rows), "classes": rows["class"].value_counts().to_dict(),
                        "n_skipped": len(skipped), "skipped": skipped}
        print(f"external: {name}: {len(rows)} images {report[name]['classes']},"
              f" {len(skipped)} left out (see metrics/data_external.json)")
    write_json(METRICS / "data_external.json", report)


if __name__ == "__main__":
    cli(main)()
