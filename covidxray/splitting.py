"""The split: a fixed test set of whole patients per class, and a grouped validation fold.

The test set holds exactly `test_per_class` images of every class, made of whole patients, so a
test image is the same image in every task and no patient is on both sides. Validation takes
`val_fraction` of the rest, also by whole patients and stratified by class. split and repeat
(which draws it again with other seeds) both call split().
"""

from collections import Counter

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from covidxray.common import MANIFEST, SPLITS, PipelineError, is_number, whole_number


def pick_test_patients(manifest, per_class, seed):
    """Whole patients, drawn at random per class, until each class has exactly per_class images."""
    whole_number(per_class, "split.test_per_class", 1)
    rng = np.random.default_rng(seed)
    by_patient = pd.crosstab(manifest["patient"], manifest["class"])
    chosen, counts = [], Counter()
    for cls in sorted(manifest["class"].unique()):
        available = int((manifest["class"] == cls).sum())
        if available <= per_class:
            raise PipelineError(
                f"{MANIFEST}: class {cls!r} has {available} image(s); split.test_per_class="
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
                f" patients (reached {counts[cls]}); lower split.test_per_class"
            )
    return set(chosen)


def pick_val_rows(rest, fraction, seed):
    """Row positions of a patient-grouped, class-stratified validation fold.

    The fold is one of round(1 / fraction) folds, so its share is 1/k nearest to fraction
    (0.2 -> 1/5, 0.3 -> 1/3), and patient groups make it approximate.
    """
    if not is_number(fraction) or not 0 < fraction <= 0.5:
        raise PipelineError(f"params.yaml: split.val_fraction must be a number in (0, 0.5],"
                            f" got {fraction!r}")
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


def split(manifest, test_per_class, val_fraction, seed, separately=()):
    """train, val and test tables; column `image` keeps each row's position in the manifest.

    The rows of each source in `separately` are split on their own (test_per_class images of
    each of its classes in the test set), after the others: adding such a source leaves the
    other sources' split, and so the tutorial's tasks, as they were.
    """
    manifest = manifest.reset_index(names="image")
    alone = manifest["source"].isin(separately)
    blocks = [manifest[~alone], *(manifest[manifest["source"] == s] for s in separately)]
    parts = [split_block(block, test_per_class, val_fraction, seed)
             for block in blocks if len(block)]
    return {name: pd.concat([part[name] for part in parts]) for name in SPLITS}


def split_block(manifest, test_per_class, val_fraction, seed):
    test_patients = pick_test_patients(manifest, test_per_class, seed)
    is_test = manifest["patient"].isin(test_patients)
    rest = manifest[~is_test].reset_index(drop=True)
    is_val = np.zeros(len(rest), dtype=bool)
    is_val[pick_val_rows(rest, val_fraction, seed)] = True
    return {"train": rest[~is_val], "val": rest[is_val], "test": manifest[is_test]}
