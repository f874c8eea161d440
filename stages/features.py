"""features: the frozen backbone's features of every image, computed once.

VGG16 is frozen and has no dropout or batch norm, so the features of an augmented view are the
same whether computed inside a training epoch or here. The augmentation bank holds
`bank.views` augmented views of each training image; train feeds the head one view of each
image per epoch and cycles through them. With views = epochs that is exactly per-epoch
augmentation, at the cost of one forward pass per view instead of one per view and epoch.

Writes data/features/train.npz (`bank`: views x N x feature shape) and val.npz and test.npz
(`features`: N x feature shape, unaugmented), in the row order of data/split/<split>.csv.
"""

import time

import keras
import numpy as np

from stages.common import FEATURES, PREPARED, cli, load_params, read_arrays, whole_number
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
    bank = params["bank"]
    views = whole_number(bank["views"], "bank.views", 0)
    batch = whole_number(bank["batch_size"], "bank.batch_size", 1)
    keras.utils.set_random_seed(params["seed"])
    extractor = build_features_model(params)
    augment = augmenter(params["augment"])
    FEATURES.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train = read_arrays(PREPARED, "train")["images"]
    print(f"features: {views} augmented view(s) of {len(train)} training images")
    np.savez(FEATURES / "train.npz", bank=augmented_views(extractor, augment, train, views, batch))
    passes = views * len(train)
    for name in ("val", "test"):
        images = read_arrays(PREPARED, name)["images"]
        np.savez(FEATURES / f"{name}.npz", features=plain_features(extractor, images, batch))
        passes += len(images)
    seconds = time.perf_counter() - started
    print(f"features: {passes} forward passes in {seconds:.0f} s ({passes / seconds:.1f} images/s)")


if __name__ == "__main__":
    cli(main)()
