"""features: the frozen backbone's features of every image, computed once.

VGG16 is frozen and has no dropout or batch norm, so the features of an augmented view are the
same whether computed inside a training epoch or here. The augmentation bank holds
`bank.views` augmented views of each image; train feeds the head one view of each training
image per epoch and cycles through them. With views = epochs that is exactly per-epoch
augmentation, at the cost of one forward pass per view instead of one per view and epoch.
Every manifest image gets its views, not only the training split's, so that a new split (and
each split of `repeat`) reuses them.

Writes data/features/features.npz: `bank`, views x N x feature shape, and `plain`, N x feature
shape (unaugmented), in the row order of the manifest.
"""

import time

import keras
import numpy as np

from stages.common import FEATURES, PREPARED_IMAGES, cli, load_params, read_arrays, whole_number
from stages.model import augmenter, build_backbone, build_extractor


def augmented_views(extractor, augment, images, views, batch_size):
    """views x N x feature shape: each view a fresh random augmentation of every image."""
    out = np.empty((views, len(images), *extractor.output_shape[1:]), dtype=np.float32)
    starts = range(0, len(images), batch_size)
    progress = keras.utils.Progbar(views * len(starts), unit_name="batch")
    for view in range(views):
        for start in starts:
            batch = images[start:start + batch_size].astype(np.float32)
            out[view, start:start + batch_size] = extractor.predict_on_batch(
                augment(batch, training=True))
            progress.add(1)
    return out


def plain_features(extractor, images, batch_size):
    features = extractor.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return features.astype(np.float32)  # from bfloat16 under mixed precision, which npz lacks


def build_features_model(params):
    backbone = params["backbone"]
    return build_extractor(build_backbone(backbone["weights"], params["image_size"],
                                          backbone["precision"]))


def main():
    params = load_params()
    views = whole_number(params["bank"]["views"], "bank.views", 0)
    batch = whole_number(params["bank"]["batch_size"], "bank.batch_size", 1)
    keras.utils.set_random_seed(params["seed"])
    extractor = build_features_model(params)
    augment = augmenter(params["augment"])
    images = read_arrays(PREPARED_IMAGES)["images"]
    print(f"features: {views} augmented view(s) and the plain view of {len(images)} images")
    started = time.perf_counter()
    bank = augmented_views(extractor, augment, images, views, batch)
    plain = plain_features(extractor, images, batch)
    seconds = time.perf_counter() - started
    FEATURES.parent.mkdir(parents=True, exist_ok=True)
    np.savez(FEATURES, bank=bank, plain=plain)
    passes = (views + 1) * len(images)
    print(f"features: {passes} forward passes in {seconds:.0f} s ({passes / seconds:.1f} images/s)")


if __name__ == "__main__":
    cli(main)()
