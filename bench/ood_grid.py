"""How finely the ood check keeps where things are in VGG16's feature map (`ood.grid`), chosen
on validation probes, then the test probes looked at once.

    python -m bench.ood_grid [--test] [--grids 1 2 4]

Needs the workspace's data/features, data/split and (for --test) data/external, as `dvc repro
ood` leaves them. For each grid: the threshold at `ood.keep` of the validation X-rays, then the
share flagged of the validation probes, the validation X-rays turned a quarter, upside down and
zoomed 2x (not frontal chest X-rays as the model sees them, and not the test probes); the
candidate with the highest mean share wins. --test adds the ood stage's probe sets (the test
split, the external sets, lateral X-rays, CT, photos, text, noise). Markdown table on stdout.
"""

import argparse
from dataclasses import replace

import numpy as np
import pandas as pd
from PIL import Image

from covidxray.config.params import load_params
from covidxray.data.external import external_images
from covidxray.data.shards import prepared_images, read_features
from covidxray.data.splitting import read_split
from covidxray.evaluation import ood
from covidxray.evaluation.non_xray import non_xray_sets
from covidxray.model.features import build_features_model, feature_batches, feature_pass
from covidxray.runner import cli

BATCH = 32


def validation_probes(images):
    """The validation X-rays made into what a frontal chest X-ray is not, each kind a set."""
    size, margin = images.shape[1], images.shape[1] // 4

    def zoomed(image):
        middle = Image.fromarray(image[margin:-margin, margin:-margin])
        return np.asarray(middle.resize((size, size), Image.BILINEAR))

    return {"turned a quarter": np.rot90(images, axes=(1, 2)).copy(),
            "upside down": images[:, ::-1].copy(),
            "zoomed 2x": np.stack([zoomed(image) for image in images])}


def probe_features(params, val_images, test):
    """{set: feature maps} of the validation probes, and with `test` of the ood stage's sets."""
    extractor = feature_pass(build_features_model(params.backbone, params.image_size))
    sets = validation_probes(val_images)
    if test:
        sets |= {name: external_images(name) for name in params.external}
        sets |= non_xray_sets(params.seed, params.image_size, params.preprocess)[0]
    return {name: np.concatenate(list(feature_batches(extractor, images, BATCH)))
            for name, images in sets.items() if len(images)}


def shares_flagged(split_maps, probe_maps, check):
    """{set: share flagged} at the threshold that keeps `check.keep` (schema.Ood) of the
    validation X-rays."""
    train, val = (ood.cell_directions(split_maps[name], check.grid) for name in ("train", "val"))
    limit = ood.threshold(train, val, check)
    maps = {"val": split_maps["val"], **({"test": split_maps["test"]} if "test" in split_maps
                                         else {}), **probe_maps}
    return {name: float((ood.kth_distances(train, ood.cell_directions(m, check.grid),
                                           check.neighbours) > limit).mean())
            for name, m in maps.items()}


def markdown(table):
    header = ["set", *table.columns]
    return "\n".join(["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
                      *(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
                        for name, row in table.iterrows())])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.ood_grid", description=__doc__)
    parser.add_argument("--test", action="store_true", help="add the test probes")
    parser.add_argument("--grids", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args(argv)
    params = load_params()
    plain = read_features()["plain"]
    splits = ("train", "val", "test") if args.test else ("train", "val")
    rows = {name: read_split(name)["image"].to_numpy() for name in splits}
    split_maps = {name: plain[r] for name, r in rows.items()}
    val_images = prepared_images()[rows["val"]]
    probe_maps = probe_features(params, val_images, args.test)
    table = pd.DataFrame({f"grid {g}": shares_flagged(split_maps, probe_maps,
                                                      replace(params.ood, grid=g))
                          for g in args.grids})
    chosen = table.loc[list(validation_probes(val_images[:1]))].mean().idxmax()
    print(markdown(table))
    print(f"\nchosen on the validation probes (highest mean share flagged): {chosen}")


if __name__ == "__main__":
    cli(main)()
