"""merge: read both sources in their upstream layouts, label, dedup and sample the manifest.

Writes data/merged/manifest.csv (path, class, patient, source, sha256, width, height) and
metrics/data.json (counts per class and every file that was left out, with the reason).
"""

import numpy as np
import pandas as pd

from covidxray.common import (CLASSES, MANIFEST, METRICS, RAW, PipelineError, cli, load_params,
                              write_json, write_table)
from covidxray.sources import covid_candidates, describe, kermany_candidates

KERMANY = RAW / "chest-xray-pneumonia" / "chest_xray"
COVID = RAW / "covid-chestxray-dataset"


def sample(images, per_class, seed):
    """Seeded sample of each class down to its requested count; fewer available means all."""
    unknown = [c for c in per_class if c not in CLASSES]
    if unknown:
        raise PipelineError(f"params.yaml: merge.per_class names unknown class(es) {unknown}")
    bad = {c: n for c, n in per_class.items() if not isinstance(n, int) or n < 0}
    if bad:
        raise PipelineError(f"params.yaml: merge.per_class counts must be whole numbers >= 0: {bad}")
    rng = np.random.default_rng(seed)
    parts, counts = [], {}
    for cls, requested in per_class.items():
        pool = images[images["class"] == cls]
        take = min(requested, len(pool))
        parts.append(pool.iloc[np.sort(rng.choice(len(pool), size=take, replace=False))])
        counts[cls] = {"available": len(pool), "requested": requested, "selected": take}
    return pd.concat(parts, ignore_index=True), counts


def main():
    params = load_params()
    merge = params["merge"]
    skipped = []
    covid = merge["covid"]
    rows = kermany_candidates(KERMANY, merge["kermany_splits"], skipped)
    rows += covid_candidates(COVID, {covid["finding"]: "covid"}, covid["modality"], covid["views"],
                             skipped)
    images, duplicates = describe(rows, skipped)
    manifest, counts = sample(images, merge["per_class"], params["seed"])

    write_table(manifest, MANIFEST)
    write_json(METRICS / "data.json", {
        "classes": counts,
        "total": len(manifest),
        "patients": int(manifest["patient"].nunique()),
        "n_skipped": len(skipped),
        "n_duplicates": len(duplicates),
        "skipped": skipped,
        "duplicates": duplicates,
    })
    for cls, count in counts.items():
        print(f"merge: {cls:9s} {count['selected']:4d} of {count['available']} available")
    print(f"merge: {len(skipped)} file(s) skipped, {len(duplicates)} duplicate(s) dropped,"
          " see metrics/data.json")


if __name__ == "__main__":
    cli(main)()
