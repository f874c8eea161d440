"""split: one train/val/test split for all tasks, grouped by patient.

The test set holds exactly `test_per_class` images of every class, made of whole patients, so a
test image is the same image in every task and no patient is on both sides. Validation takes
`val_fraction` of the rest, also by whole patients and stratified by class. The splits that
repeat and holdout draw later (seeds seed + 1, ...) are drawn here too, and thrown away: a
test_per_class that one of them cannot meet stops the pipeline here, not an hour later.
"""

import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.splitting import draw_splits, split_seeds, write_split
from covidxray.paths import MANIFEST
from covidxray.runner import cli


def main():
    params = load_params()
    manifest = pd.read_csv(MANIFEST)
    # both are at least 1 (the params checks): the first seed is split's own
    later = max(params.repeat_splits, params.holdout.splits)
    parts = draw_splits(manifest, params.split, split_seeds(params.seed, later))[0]
    write_split(parts)
    for name, rows in parts.items():
        counts = rows["class"].value_counts().sort_index().to_dict()
        print(f"split: {name:5s} {len(rows):4d} images, {rows['patient'].nunique():4d} patients,"
              f" {counts}")


if __name__ == "__main__":
    cli(main)()
