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

from covidxray.common import EXTERNAL, fine_tune_params, read_arrays, whole_number
from covidxray.distribution import predict_on_batch
from covidxray.machine import here, remembered, resolved_precision
from covidxray.model import bank_layer, blocks_of, build_extractor, vgg_backbone

BATCH_SIZES = (32, 64, 128, 256, 512, 1024)  # bank.batch_size auto tries these, in order


class Pixels(keras.layers.Layer):
    """Stored pixels (uint8) to float32 on the device: a quarter of the bytes leave the host."""

    def call(self, images):
        return keras.ops.cast(images, "float32")


class Augmenting(keras.layers.Layer):
    """The augmentation layers, always on, so that they compile into the forward pass (predict
    calls layers in inference mode, where augmentation does nothing)."""

    def __init__(self, augment, **kwargs):
        super().__init__(**kwargs)
        self.augment = augment

    def call(self, images):
        return self.augment(images, training=True)


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
    starts = range(0, len(images), batch_size)
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        ahead = reader.submit(images.__getitem__, slice(0, batch_size))
        for start in starts:
            batch = ahead.result()
            if start + batch_size < len(images):
                ahead = reader.submit(images.__getitem__,
                                      slice(start + batch_size, start + 2 * batch_size))
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


def bank_batch(params, extractor):
    """bank.batch_size, or for `auto` the measured_batch_size of extractor's feature_pass on
    this machine (measured once, then remembered)."""
    setting = params["bank"]["batch_size"]
    if setting != "auto":
        return whole_number(setting, "bank.batch_size", 1)
    precision = resolved_precision(params["backbone"]["precision"])
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
    return plain_features(model, images, bank_batch(params, model))
