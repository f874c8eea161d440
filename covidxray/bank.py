"""The augmentation bank: the frozen backbone's features of augmented views of every image.

VGG16 is frozen and has no dropout or batch norm, so the features of an augmented view are the
same whether computed inside a training epoch or once, here. With backbone.trainable_blocks > 0
the bank holds the output of the last frozen block instead (bank_layer), so fine-tuning the
blocks after it never runs the earlier ones again.
"""

import keras
import numpy as np

from covidxray.model import bank_layer, build_backbone, build_extractor


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


def build_features_model(backbone, image_size, trainable_blocks=0):
    """Raw images to what the bank stores, per the `backbone` params."""
    vgg = build_backbone(backbone["weights"], image_size, backbone["precision"])
    return build_extractor(vgg, bank_layer(trainable_blocks) if trainable_blocks else None)
