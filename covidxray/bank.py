"""The augmentation bank: the frozen backbone's features of augmented views of every image.

VGG16 is frozen and has no dropout or batch norm, so the features of an augmented view are the
same whether computed inside a training epoch or once, here. With backbone.trainable_blocks > 0
the bank holds the output of the last frozen block instead (bank_layer), so fine-tuning the
blocks after it never runs the earlier ones again.
"""

import numpy as np

from covidxray.common import EXTERNAL, fine_tune_params, read_arrays
from covidxray.distribution import predict_on_batch
from covidxray.model import bank_layer, blocks_of, build_extractor, vgg_backbone


def feature_batches(extractor, images, batch_size, augment=None, progress=None):
    """Yield the extractor's features of images (an array or Shards), a batch at a time, read
    as they are needed; with `augment`, of a fresh random augmentation of each batch."""
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32)
        yield predict_on_batch(extractor, augment(batch, training=True) if augment else batch)
        if progress is not None:
            progress.add(1)


def augmented_views(extractor, augment, images, views, batch_size):
    """views x N x feature shape in memory: each view a fresh random augmentation of every
    image, as the features stage writes them view after view."""
    return np.stack([np.concatenate(list(feature_batches(extractor, images, batch_size, augment)))
                     for _ in range(views)]).astype(np.float32)


def plain_features(extractor, images, batch_size):
    """N x feature shape in float32 (from bfloat16 under mixed precision)."""
    return np.concatenate(list(feature_batches(extractor, images, batch_size))).astype(np.float32)


def build_features_model(backbone, image_size, trainable_blocks=0):
    """Raw images to what the bank stores, per the `backbone` params."""
    vgg = vgg_backbone(backbone, image_size)
    return build_extractor(vgg, bank_layer(trainable_blocks, blocks_of(vgg))
                           if trainable_blocks else None)


def external_features(params, name):
    """The plain features of external set `name`'s images (data/external/<name>.npz) as the
    bank stores them, per the params."""
    images = read_arrays(EXTERNAL / f"{name}.npz", "external")["images"]
    model = build_features_model(params["backbone"], params["image_size"],
                                 fine_tune_params(params)["blocks"])
    return plain_features(model, images, params["bank"]["batch_size"])
