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

from covidxray.config.params import load_params
from covidxray.data.external import external_features
from covidxray.data.shards import read_features
from covidxray.data.splitting import read_split
from covidxray.errors import PipelineError
from covidxray.evaluation import ood
from covidxray.evaluation.figures import ood_distances
from covidxray.evaluation.non_xray import non_xray_sets
from covidxray.files import write_json
from covidxray.model.backbone import fingerprint
from covidxray.model.features import build_features_model, feature_pass
from covidxray.model.machine import resolved_precision
from covidxray.paths import DETAIL, SPLITS
from covidxray.runner import cli

SUMMARY, PLOT = DETAIL / "ood.json", DETAIL / "ood.png"


def reference(params, extractor, vectors):
    backbone = replace(params.backbone, precision=resolved_precision(params.backbone.precision))
    return ood.fit(vectors["train"], vectors["val"], params.ood, backbone=backbone,
                   size=params.image_size, preprocess=params.preprocess,
                   fingerprint=fingerprint(extractor))


def external_vectors(names, probes, grid):
    """{set: its stored features' cell directions} of the external sets; a name that a probe
    set has is refused."""
    taken = [name for name in names if name in probes or name in SPLITS]
    if taken:
        raise PipelineError(f"params.yaml: external.{taken[0]} has the name of an ood probe set"
                            f" ({', '.join([*SPLITS, *probes])}); rename it")
    return {name: ood.cell_directions(external_features(name), grid) for name in names}




def main():
    params = load_params()
    plain = read_features()["plain"]
    vectors = {name: ood.row_cell_directions(plain, read_split(name)["image"].to_numpy(),
                                             params.ood.grid)
               for name in SPLITS}
    extractor = build_features_model(params.backbone, params.image_size)
    ref = reference(params, extractor, vectors)
    check = ood.XrayCheck(ref, feature_pass(extractor))
    probes, skipped = non_xray_sets(params.seed, params.image_size, params.preprocess)
    vectors |= external_vectors(list(params.external), probes, params.ood.grid)
    distances = {**{name: ref.distances(vectors[name]) for name in vectors if name != "train"},
                 **{name: check.distances(pixels) for name, pixels in probes.items()}}
    ood.write_reference(ref)
    result = ood.flag_counts(ref, params.ood.keep, distances, skipped)
    write_json(SUMMARY, result)
    ood_distances(distances, ref.threshold, PLOT)
    for name, s in result["sets"].items():
        print(f"ood: {name}: {s['flagged']} of {s['n']} flagged")
    print(f"ood: threshold {ref.threshold:.4f} (k={ref.neighbours}, keep {params.ood.keep}),"
          f" {len(ref.vectors)} training images; {ood.REFERENCE}, {SUMMARY}, {PLOT}")


if __name__ == "__main__":
    cli(main)()
