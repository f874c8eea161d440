"""features: the augmentation bank, the frozen backbone's features of every image, computed once.

train feeds the head one stored view of each training image per epoch and cycles through them
(covidxray/bank.py). With views = epochs that is exactly per-epoch augmentation, at the cost of
one forward pass per view instead of one per view and epoch. Every manifest image gets its
views, not only the training split's, so that a new split (and each split of `repeat`) reuses
them.

Writes data/features/features.npz: `bank`, views x N x feature shape, and `plain`, N x feature
shape (unaugmented), in the row order of the manifest.
"""

import time

import keras

from covidxray.bank import augmented_views, build_features_model, plain_features
from covidxray.common import (FEATURES, PREPARED_IMAGES, augment_params, cli, fine_tune_params,
                              load_params, read_arrays, whole_number, write_arrays)
from covidxray.model import augmenter


def main():
    params = load_params()
    views = whole_number(params["bank"]["views"], "bank.views", 0)
    batch = whole_number(params["bank"]["batch_size"], "bank.batch_size", 1)
    blocks = fine_tune_params(params)["blocks"]
    augment = augment_params(params)
    keras.utils.set_random_seed(params["seed"])  # then the backbone, then the augmentation draw
    extractor = build_features_model(params["backbone"], params["image_size"], blocks)
    augment = augmenter(augment)
    images = read_arrays(PREPARED_IMAGES, "prepare")["images"]
    print(f"features: {views} augmented view(s) and the plain view of {len(images)} images,"
          f" {extractor.output_shape[1:]} each")
    started = time.perf_counter()
    bank = augmented_views(extractor, augment, images, views, batch)
    plain = plain_features(extractor, images, batch)
    seconds = time.perf_counter() - started
    write_arrays(FEATURES, bank=bank, plain=plain)
    passes = (views + 1) * len(images)
    print(f"features: {passes} forward passes in {seconds:.0f} s ({passes / seconds:.1f} images/s)")


if __name__ == "__main__":
    cli(main)()
