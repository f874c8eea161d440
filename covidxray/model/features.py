"""The augmentation bank: the frozen backbone's features of augmented views of every image.

VGG16 is frozen and has no dropout or batch norm, so the features of an augmented view are the
same whether computed inside a training epoch or once, here. With backbone.trainable_blocks > 0
the bank holds the output of the last frozen block instead (bank_layer), so fine-tuning the
blocks after it never runs the earlier ones again.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from covidxray.model.augment import Augmenting
from covidxray.model.backbone import bank_layer, blocks_of, build_extractor, vgg_backbone
from covidxray.model.batching import batch_slices
from covidxray.model.devices import predict_on_batch
from covidxray.model.machine import here, remembered, resolved_precision

BATCH_SIZES = (32, 64, 128, 256, 512, 1024)  # features.batch_size auto tries these, in order


class Pixels(keras.layers.Layer):
    """Stored pixels (uint8) to float32 on the device: a quarter of the bytes leave the host."""

    def call(self, images):
        return keras.ops.cast(images, "float32")


def feature_pass(extractor, augment=None, dtype="uint8"):
    """One compiled step from stored pixels to features: the cast, `augment` (the augmentation
    layers, drawing afresh at every call) if given, then the extractor."""
    inputs = keras.Input(extractor.input_shape[1:], dtype=dtype, name="pixels")
    pixels = Pixels(name="pixels_to_float")(inputs)
    if augment is not None:
        pixels = Augmenting(augment, name="augment")(pixels)
    return keras.Model(inputs, extractor(pixels), name="feature_pass")


def feature_batches(model, images, batch_size, progress=None):
    """Yield a feature_pass model's outputs over images (an array or Shards), a batch at a time,
    the next batch read while this one computes."""
    batches = list(batch_slices(len(images), batch_size))
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        ahead = reader.submit(images.__getitem__, batches[0]) if batches else None
        for following in [*batches[1:], None] if batches else []:
            batch = ahead.result()
            if following is not None:
                ahead = reader.submit(images.__getitem__, following)
            yield predict_on_batch(model, batch)
            if progress is not None:
                progress.add(1)


def batch_rate(model, batch_size):
    """Images a second of one batch through `model`, after a first batch that compiles it."""
    batch = np.zeros((batch_size, *model.input_shape[1:]), model.inputs[0].dtype)
    predict_on_batch(model, batch)
    started = time.perf_counter()
    predict_on_batch(model, batch)
    return batch_size / (time.perf_counter() - started)


def measured_batch_size(model, seconds=1.0):
    """The first of BATCH_SIZES after which doubling gains under 10%, trying sizes while a
    batch takes under `seconds`: on a CPU the smallest, on a GPU what keeps it busy."""
    best, best_rate = BATCH_SIZES[0], batch_rate(model, BATCH_SIZES[0])
    for size in BATCH_SIZES[1:]:
        if size / best_rate > seconds:
            break
        rate = batch_rate(model, size)
        if rate < 1.1 * best_rate:
            break
        best, best_rate = size, rate
    return best


def bank_batch(spec, backbone, extractor):
    """features.batch_size, or for `auto` the measured_batch_size of extractor's feature_pass on
    this machine (measured once, then remembered)."""
    if spec.batch_size != "auto":
        return spec.batch_size
    precision = resolved_precision(backbone.precision)
    key = (f"{here()}: VGG16 {tuple(extractor.input_shape[1:])} to"
           f" {tuple(extractor.output_shape[1:])} in {precision}")
    return remembered("bank_batch_size", key,
                      lambda: measured_batch_size(feature_pass(extractor)))


def augmented_views(extractor, augment, images, views, batch_size):
    """views x N x feature shape in memory: each view a fresh random augmentation of every
    image, as the features stage writes them view after view."""
    model = feature_pass(extractor, augment, images.dtype)
    return np.stack([np.concatenate(list(feature_batches(model, images, batch_size)))
                     for _ in range(views)]).astype(np.float32)


def plain_features(extractor, images, batch_size):
    """N x feature shape in float32 (from bfloat16 under mixed precision)."""
    model = feature_pass(extractor, dtype=images.dtype)
    return np.concatenate(list(feature_batches(model, images, batch_size))).astype(np.float32)


def build_features_model(backbone, image_size):
    """Raw images to what the bank stores, per the `backbone` params: VGG16's features, or with
    fine-tuning those of the last frozen block."""
    vgg = vgg_backbone(backbone, image_size)
    blocks = backbone.trainable_blocks
    return build_extractor(vgg, bank_layer(blocks, blocks_of(vgg)) if blocks else None)
