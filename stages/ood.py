"""ood: does an input look like a frontal chest X-ray like ours? The reference predict checks
every image against (covidxray/evaluation/ood.py), and how it does on probe sets.

The reference is the plain features (data/features) of the split's training images, every
source and class: the question is whether an image is a frontal chest X-ray like the training
ones, not whether it fits one task. The threshold is set on the validation images. Then it
scores the test split and every external set (frontal X-rays of other patients and hospitals:
few should be flagged) from their stored features (data/features, data/external_features), and,
through the frozen backbone of params, probe sets that are not frontal chest X-rays
(covidxray/evaluation/non_xray.py: lateral X-rays, CT slices, photos, text, noise).

Writes models/ood.npz (the reference), metrics/detail/ood.json (threshold, k, keep, and per set the
images scored and the share flagged) and metrics/detail/ood.png (each set's distances beside
the threshold).
"""

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from covidxray.config.params import load_params  # noqa: E402
from covidxray.data.external import external_features  # noqa: E402
from covidxray.data.shards import read_features  # noqa: E402
from covidxray.data.splitting import read_split  # noqa: E402
from covidxray.errors import PipelineError
from covidxray.evaluation import ood  # noqa: E402
from covidxray.evaluation.non_xray import probe_sets  # noqa: E402
from covidxray.files import replacing, write_json  # noqa: E402
from covidxray.model.backbone import fingerprint  # noqa: E402
from covidxray.model.features import build_features_model, feature_pass  # noqa: E402
from covidxray.model.machine import resolved_precision  # noqa: E402
from covidxray.paths import DETAIL, SPLITS  # noqa: E402
from covidxray.runner import cli  # noqa: E402

SUMMARY, PLOT = DETAIL / "ood.json", DETAIL / "ood.png"


def reference(params, extractor, vectors):
    backbone = replace(params.backbone, precision=resolved_precision(params.backbone.precision))
    return ood.fit(vectors["train"], vectors["val"], params.ood, backbone=backbone,
                   size=params.image_size, preprocess=params.preprocess,
                   fingerprint=fingerprint(extractor))


def external_vectors(names, probes, grid):
    """{set: pooled stored features} of the external sets; a name a probe set has is refused."""
    taken = [name for name in names if name in probes or name in SPLITS]
    if taken:
        raise PipelineError(f"params.yaml: external.{taken[0]} has the name of an ood probe set"
                            f" ({', '.join([*SPLITS, *probes])}); rename it")
    return {name: ood.pooled(external_features(name), grid) for name in names}


def summary(ref, keep, distances, skipped):
    sets = {name: {"n": len(d), "flagged": int((d > ref.threshold).sum()),
                   "share_flagged": round(float((d > ref.threshold).mean()), 4) if len(d)
                   else None,
                   "median_distance": round(float(np.median(d)), 4) if len(d) else None}
            for name, d in distances.items()}
    return {"threshold": round(ref.threshold, 6), "neighbours": ref.neighbours, "grid": ref.grid,
            "keep": keep,
            "reference_images": len(ref.vectors), "sets": sets, "n_skipped": len(skipped),
            "skipped": skipped}


def plot(distances, threshold):
    """Each set's distances as points on its own row, the threshold as a line."""
    names = list(distances)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    jitter = np.random.default_rng(0)
    for row, name in enumerate(names):
        d = distances[name]
        ax.scatter(d, row + jitter.uniform(-0.25, 0.25, len(d)), s=8, alpha=0.6)
    ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(yticks=range(len(names)), yticklabels=names, xlabel="cosine distance to the k-th"
           " nearest training X-ray", title="Not a frontal chest X-ray? (flagged right of the"
           " line)")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    with replacing(PLOT) as partial:
        fig.savefig(partial, dpi=100)
    plt.close(fig)


def main():
    params = load_params()
    plain = read_features()["plain"]
    vectors = {name: ood.pooled_rows(plain, read_split(name)["image"].to_numpy(), params.ood.grid)
               for name in SPLITS}
    extractor = build_features_model(params.backbone, params.image_size)
    ref = reference(params, extractor, vectors)
    check = ood.Check(ref, feature_pass(extractor))
    probes, skipped = probe_sets(params.seed, params.image_size, params.preprocess)
    vectors |= external_vectors(list(params.external), probes, params.ood.grid)
    distances = {**{name: ref.distances(vectors[name]) for name in vectors if name != "train"},
                 **{name: check.distances(pixels) for name, pixels in probes.items()}}
    ood.write_reference(ref)
    result = summary(ref, params.ood.keep, distances, skipped)
    write_json(SUMMARY, result)
    plot(distances, ref.threshold)
    for name, s in result["sets"].items():
        print(f"ood: {name}: {s['flagged']} of {s['n']} flagged")
    print(f"ood: threshold {ref.threshold:.4f} (k={ref.neighbours}, keep {params.ood.keep}),"
          f" {len(ref.vectors)} training images; {ood.REFERENCE}, {SUMMARY}, {PLOT}")


if __name__ == "__main__":
    cli(main)()
