"""merge: read the sources in their upstream layouts, label, dedup and sample the manifest.

The tutorial's two sources are sampled by `merge.per_class` exactly as before NIH was added;
NIH ChestX-ray14 (`merge.nih`) is sampled after them, by its own counts, and its rows come last,
so the tutorial's rows, their order and everything made from them stay the same.

Writes data/merged/manifest.csv (path, class, patient, source, age_group, sha256, width, height)
and metrics/data.json (counts per class and every file that was left out, with the reason).
"""

import numpy as np
import pandas as pd

from covidxray.common import (CLASSES, MANIFEST, METRICS, RAW, PipelineError, cli, load_params,
                              write_json, write_table)
from covidxray.sources import covid_candidates, describe, kermany_candidates, nih_candidates

KERMANY = RAW / "chest-xray-pneumonia" / "chest_xray"
COVID = RAW / "covid-chestxray-dataset"
NIH = RAW / "nih-chestxray14"


def sample(images, per_class, rng, key):
    """Seeded sample of each class down to its requested count; fewer available means all.
    `key` names the counts' params in errors."""
    unknown = [c for c in per_class if c not in CLASSES]
    if unknown:
        raise PipelineError(f"params.yaml: {key} names unknown class(es) {unknown}")
    bad = {c: n for c, n in per_class.items() if not isinstance(n, int) or n < 0}
    if bad:
        raise PipelineError(f"params.yaml: {key} counts must be whole numbers >= 0: {bad}")
    parts, counts = [images.iloc[:0]], {}
    for cls, requested in per_class.items():
        pool = images[images["class"] == cls]
        take = min(requested, len(pool))
        parts.append(pool.iloc[np.sort(rng.choice(len(pool), size=take, replace=False))])
        counts[cls] = {"available": len(pool), "requested": requested, "selected": take}
    return pd.concat(parts, ignore_index=True), counts


def candidates(merge, skipped):
    covid, nih = merge["covid"], merge.get("nih")
    rows = kermany_candidates(KERMANY, merge["kermany_splits"], skipped)
    rows += covid_candidates(COVID, {covid["finding"]: "covid"}, covid["modality"], covid["views"],
                             skipped)
    if nih:
        rows += nih_candidates(NIH, nih["findings"], nih["ages"], nih["views"], skipped)
    return rows


def main():
    params = load_params()
    merge = params["merge"]
    skipped = []
    images, duplicates = describe(candidates(merge, skipped), skipped)
    is_nih = images["source"] == "nih"
    rng = np.random.default_rng(params["seed"])
    manifest, counts = sample(images[~is_nih], merge["per_class"], rng, "merge.per_class")
    nih, nih_counts = sample(images[is_nih], (merge.get("nih") or {}).get("per_class") or {}, rng,
                             "merge.nih.per_class")
    manifest = pd.concat([manifest, nih], ignore_index=True)

    write_table(manifest, MANIFEST)
    write_json(METRICS / "data.json", {
        "classes": counts,
        "nih": nih_counts,
        "sources": manifest.groupby(["source", "class"]).size().unstack(fill_value=0)
                           .to_dict(orient="index"),
        "total": len(manifest),
        "patients": int(manifest["patient"].nunique()),
        "n_skipped": len(skipped),
        "n_duplicates": len(duplicates),
        "skipped": skipped,
        "duplicates": duplicates,
    })
    for source, cls_counts in (("kermany/covid", counts), ("nih", nih_counts)):
        for cls, count in cls_counts.items():
            print(f"merge: {source:13s} {cls:15s} {count['selected']:4d} of {count['available']}"
                  " available")
    print(f"merge: {len(skipped)} file(s) skipped, {len(duplicates)} duplicate(s) dropped,"
          " see metrics/data.json")


if __name__ == "__main__":
    cli(main)()
