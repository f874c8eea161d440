"""The split: a fixed test set of whole patients per class, and a grouped validation fold.

The test set holds exactly `test_per_class` images of every class, made of whole patients, so a
test image is the same image in every task and no patient is on both sides. Validation takes
`val_fraction` of the rest, also by whole patients and stratified by class. split, repeat and
holdout (which draw it again with other seeds) call draw_splits().
"""

from collections import Counter

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from covidxray.data.provenance import made_from_manifest, manifest_digest
from covidxray.errors import PipelineError
from covidxray.files import read_json, write_json, write_table
from covidxray.paths import MANIFEST, SPLIT_DIR, SPLITS


def pick_test_patients(manifest, per_class, seed, key="split.test_per_class"):
    """Whole patients, drawn at random per class, until each class has exactly per_class images."""
    rng = np.random.default_rng(seed)
    by_patient = pd.crosstab(manifest["patient"], manifest["class"])
    chosen, counts = [], Counter()
    for cls in sorted(manifest["class"].unique()):
        available = int((manifest["class"] == cls).sum())
        if available <= per_class:
            raise PipelineError(
                f"{MANIFEST}: class {cls!r} has {available} image(s); {key}="
                f"{per_class} leaves none for training"
            )
        candidates = by_patient.index[by_patient[cls] > 0].drop(chosen, errors="ignore")
        for patient in rng.permutation(np.sort(candidates.to_numpy())):
            if counts[cls] == per_class:
                break
            images = by_patient.loc[patient]
            # a patient's images of every class move together; none may overshoot its class
            if all(counts[c] + n <= per_class for c, n in images.items()):
                chosen.append(patient)
                counts.update({c: int(n) for c, n in images.items() if n})
        if counts[cls] < per_class:
            raise PipelineError(
                f"{MANIFEST}: cannot make {per_class} test images of class {cls!r} from whole"
                f" patients (reached {counts[cls]}); lower {key}"
            )
    return set(chosen)


def pick_val_rows(rest, fraction, seed):
    """Row positions of a patient-grouped, class-stratified validation fold.

    The fold is one of round(1 / fraction) folds, so its share is 1/k nearest to fraction
    (0.2 -> 1/5, 0.3 -> 1/3), and patient groups make it approximate.
    """
    k = round(1 / fraction)
    smallest = rest["class"].value_counts().min()
    if smallest < k:
        raise PipelineError(
            f"{MANIFEST}: after the test set a class has {smallest} image(s), too few for"
            f" {k} validation folds (split.val_fraction={fraction})"
        )
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    _, val = next(folds.split(rest, rest["class"], groups=rest["patient"]))
    return val


def draw_split(manifest, split, seed):
    """train, val and test tables per the `split` params; column `image` keeps each row's
    position in the manifest.

    The rows of each source in `split.separately` are split on their own (test_per_class images,
    or the source's own count, of each of its classes in the test set), after the others:
    adding such a source leaves the other sources' split, and so the tutorial's tasks, as they
    were.
    """
    manifest = manifest.reset_index(names="image")
    alone = manifest["source"].isin(split.separately)
    blocks = [(None, manifest[~alone]),
              *((s, manifest[manifest["source"] == s]) for s in split.separately)]
    parts = [split_block(block, split.test_images(source), split.val_fraction, seed,
                         f"split.test_per_class_by_source.{source}"
                         if source in (split.own_test or {})
                         else "split.test_per_class")
             for source, block in blocks if len(block)]
    return {name: pd.concat([part[name] for part in parts]) for name in SPLITS}


def split_seeds(seed, count):
    """The seeds of repeated splits: seed, seed + 1, ... (the first is split's own)."""
    return [seed + i for i in range(count)]


def draw_splits(manifest, split, seeds):
    """draw_split for each seed, every one drawn before any is used: a test_per_class that
    only some seeds can meet with whole patients is refused up front, naming the seed."""
    drawn = []
    for seed in seeds:
        try:
            drawn.append(draw_split(manifest, split, seed))
        except PipelineError as err:
            raise PipelineError(f"{err} (drawing the split of seed {seed}; split, repeat and"
                                f" holdout draw seeds {seeds[0]} to {seeds[-1]})") from None
    return drawn


def split_block(manifest, test_per_class, val_fraction, seed, key="split.test_per_class"):
    test_patients = pick_test_patients(manifest, test_per_class, seed, key)
    is_test = manifest["patient"].isin(test_patients)
    rest = manifest[~is_test].reset_index(drop=True)
    is_val = np.zeros(len(rest), dtype=bool)
    is_val[pick_val_rows(rest, val_fraction, seed)] = True
    return {"train": rest[~is_val], "val": rest[is_val], "test": manifest[is_test]}


def task_rows(rows, task, where):
    """A table's rows of a task's classes and sources, with the label index of each. `where`
    names the table in the error raised when a class has no rows."""
    classes = task.classes
    kept = rows[rows["class"].isin(classes) & rows["source"].isin(task.sources)].copy()
    present = set(kept["class"])
    for cls in classes:
        if cls not in present:
            raise PipelineError(f"{where}: no images of class {cls} for task {task.name}; "
                                + missing_class_hint(rows, task, cls))
    kept["label"] = kept["class"].map({c: i for i, c in enumerate(classes)})
    return kept


def missing_class_hint(rows, task, cls):
    """Where images of `cls` could come from, for a task whose sources give none."""
    others = sorted(set(rows.loc[rows["class"] == cls, "source"]))
    if others:
        return (f"tasks.{task.name}.sources ({', '.join(task.sources)}) give none, where"
                f" {', '.join(others)} do: add one to the task's sources or leave {cls} out")
    return ("no source gives any: check the per_class counts of merge (merge.per_class and each"
            " source's) and the split params")


def write_split(parts):
    """The split's tables, and the manifest they were drawn from (read_split checks it)."""
    for name, rows in parts.items():
        write_table(rows, SPLIT_DIR / f"{name}.csv")
    write_json(SPLIT_DIR / "made_from.json", {"manifest_sha256": manifest_digest()})


def read_split(name, task=None):
    """One split's rows of a task (None: every row). Column `image` is each image's manifest row,
    and so its index in the prepared images and the features."""
    path = SPLIT_DIR / f"{name}.csv"
    record = SPLIT_DIR / "made_from.json"
    recorded = read_json(record) if record.is_file() else {}
    made_from_manifest(path, recorded.get("manifest_sha256"), "split")
    rows = pd.read_csv(path)
    return rows if task is None else task_rows(rows, task, path)
