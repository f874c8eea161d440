"""merge: read the sources in their layouts, label, dedup and sample the manifest.

The tutorial's two sources are sampled by `merge.per_class` exactly as before NIH was added;
NIH ChestX-ray14 (`merge.nih`), then Hannover's COVID-19 images (`merge.hannover`), then each
set of `merge.sources` in the order given (your own data in the `folders` or `table` layout,
covidxray/data/sources.py) are sampled after them, each by its own counts, and their rows come last
in that order, so the tutorial's rows, NIH's, their order and everything made from them stay the
same. A set of merge.sources named nih or hannover takes the place of the built-in one it
replaces (which must then be left out): the same rows give the same manifest.

Writes data/merged/manifest.csv (path, class, patient, source, age_group, sha256, width, height)
and metrics/detail/data.json (counts per class and every file that was left out, with the reason).
"""

import sys

import numpy as np
import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.sources import candidates, describe, kermany_candidates
from covidxray.files import write_json, write_table
from covidxray.paths import DETAIL, MANIFEST, RAW
from covidxray.runner import cli

KERMANY = RAW / "chest-xray-pneumonia" / "chest_xray"
COVID = RAW / "covid-chestxray-dataset"
NIH = RAW / "nih-chestxray14"
HANNOVER = RAW / "hannover-covid-19"


def sample(images, per_class, rng):
    """Seeded sample of each class down to its requested count; fewer available means all."""
    parts, counts = [images.iloc[:0]], {}
    for cls, requested in per_class.items():
        pool = images[images["class"] == cls]
        take = min(requested, len(pool))
        parts.append(pool.iloc[np.sort(rng.choice(len(pool), size=take, replace=False))])
        counts[cls] = {"available": len(pool), "requested": requested, "selected": take}
    return pd.concat(parts, ignore_index=True), counts


def merged_candidates(merge, skipped):
    """Every labelled image of the sources merge reads (nih and hannover may be left out), then
    of each set of merge.sources."""
    rows = kermany_candidates(KERMANY, merge.kermany_splits, skipped)
    for layout, root in (("covid", COVID), ("nih", NIH), ("hannover", HANNOVER)):
        if getattr(merge, layout):
            rows += candidates(layout, root, getattr(merge, layout), skipped, f"merge.{layout}")
    for name, spec in merge.sources.items():
        rows += candidates(spec.layout, spec.path, spec.filter, skipped, f"merge.sources.{name}")
    return rows


def sample_all(images, merge, rng):
    """The tutorial's sources sampled by merge.per_class, then each source of
    merge.sampled_apart() by its own counts, its rows after the others'; the counts of the
    former and of each of the latter."""
    apart = merge.sampled_apart()
    separate = images["source"].isin([s for sources, _ in apart.values() for s in sources])
    manifest, counts = sample(images[~separate], merge.per_class, rng)
    parts, separate_counts = [manifest], {}
    for name, (sources, per_class) in apart.items():
        part, separate_counts[name] = sample(images[images["source"].isin(sources)], per_class,
                                             rng)
        parts.append(part)
    return pd.concat(parts, ignore_index=True), counts, separate_counts


def main():
    params = load_params()
    merge = params.merge
    skipped = []
    images, duplicates = describe(merged_candidates(merge, skipped), skipped)
    rng = np.random.default_rng(params.seed)
    manifest, counts, separate_counts = sample_all(images, merge, rng)

    write_table(manifest, MANIFEST)
    write_json(DETAIL / "data.json", {
        "classes": counts,
        **separate_counts,
        "sources": manifest.groupby(["source", "class"]).size().unstack(fill_value=0)
                           .to_dict(orient="index"),
        "total": len(manifest),
        "patients": int(manifest["patient"].nunique()),
        "n_skipped": len(skipped),
        "n_duplicates": len(duplicates),
        "skipped": skipped,
        "duplicates": duplicates,
    })
    for source, cls_counts in (("kermany/covid", counts), *separate_counts.items()):
        for cls, count in cls_counts.items():
            print(f"merge: {source:13s} {cls:15s} {count['selected']:4d} of {count['available']}"
                  " available")
            if count["selected"] < count["requested"]:  # an empty class folder, say
                print(f"warning: merge: {source} {cls}: {count['requested']} asked for,"
                      f" {count['available']} available (an empty or missing class folder?);"
                      " metrics/detail/data.json records it", file=sys.stderr)
    print(f"merge: {len(skipped)} file(s) skipped, {len(duplicates)} duplicate(s) dropped,"
          " see metrics/detail/data.json")


if __name__ == "__main__":
    cli(main)()
