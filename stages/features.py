"""features: the augmentation bank, the frozen backbone's features of every image, computed once.

train feeds the head one stored view of each training image per epoch and cycles through them
(covidxray/model/features.py). With views = epochs that is exactly per-epoch augmentation, at the
cost of one forward pass per view instead of one per view and epoch. Every manifest image gets its
views, not only the training split's, so that a new split (and each split of `repeat`) reuses them.

Writes data/features/: `view-00/`, `view-01/`, ... (one per augmented view) and `plain/`
(unaugmented), each a sharded array (covidxray/data/shards.py) of N x feature shape in the row order
of the manifest and in `features.dtype`; and data/external_features/<set>.npz, the plain features
of each external set's images (data/external) in float32, which evaluate, holdout, confound,
controls and ood read instead of running VGG16 on them again. Images are read, and features
written, a batch and a shard at a time. With `distribution` set to spread over several devices,
each batch is split between them (in this one process).
"""

import math
import time

import keras
import numpy as np

from covidxray.config.params import load_params
from covidxray.data.external import external_images
from covidxray.data.provenance import manifest_digest, write_arrays
from covidxray.data.shards import prepared_images, view_name, write_shards
from covidxray.files import replacing_folder
from covidxray.model.augment import augmenter
from covidxray.model.batching import batch_count
from covidxray.model.devices import distributed
from covidxray.model.features import bank_batch, build_features_model, feature_batches, feature_pass
from covidxray.model.machine import resolved_precision
from covidxray.paths import EXTERNAL_FEATURES, FEATURES
from covidxray.runner import cli


def write_bank(params, extractor, batch):
    """Every image's features, view after view: data/features/."""
    augmented, plain = feature_pass(extractor, augmenter(params.augment)), feature_pass(extractor)
    images = prepared_images()
    views, dtype, shape = params.features.views, params.features.dtype, extractor.output_shape[1:]
    print(f"features: {views} augmented view(s) and the plain view of {len(images)} images,"
          f" {shape} each, stored as {dtype}, in batches of {batch}, VGG16 in"
          f" {resolved_precision(params.backbone.precision)}")
    progress = keras.utils.Progbar((views + 1) * batch_count(len(images), batch),
                                   unit_name="batch")
    needs = (views + 1) * len(images) * math.prod(shape) * np.dtype(dtype).itemsize
    with replacing_folder(FEATURES, needs) as folder:
        passes = [(view_name(view), augmented) for view in range(views)] + [("plain", plain)]
        for name, model in passes:
            write_shards(folder / name, feature_batches(model, images, batch, progress),
                         shape, dtype, params.shard_size, manifest_digest())
    return (views + 1) * len(images)


def write_external(names, extractor, batch):
    """Each external set's plain features, float32: data/external_features/<set>.npz."""
    plain, shape = feature_pass(extractor), extractor.output_shape[1:]
    sets = {name: external_images(name) for name in names}
    images_count = sum(len(images) for images in sets.values())
    with replacing_folder(EXTERNAL_FEATURES, images_count * math.prod(shape) * 4) as folder:
        for name, images in sets.items():
            found = list(feature_batches(plain, images, batch))
            write_arrays(folder / f"{name}.npz", features=np.concatenate(found).astype(np.float32)
                         if found else np.empty((0, *shape), np.float32))
    return images_count


def main():
    params = load_params()
    keras.utils.set_random_seed(params.seed)  # then the backbone, then the augmentation draw
    started = time.perf_counter()
    # one process: several would each compute every image; run it on one host, dvc push
    with distributed(params.distribution, across_processes=False) as where:
        extractor = build_features_model(params.backbone, params.image_size)
        batch = bank_batch(params.features, params.backbone, extractor)
        passes = write_bank(params, extractor, batch)
        passes += write_external(list(params.external), extractor, batch)
    seconds = time.perf_counter() - started
    print(f"features: {passes} forward passes in {seconds:.0f} s ({passes / seconds:.1f}"
          f" images/s) on {where}")


if __name__ == "__main__":
    cli(main)()
