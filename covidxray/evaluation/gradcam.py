"""Grad-CAM: where in an image the classifier found the evidence for a class.

Heatmaps over VGG16's last convolutional layer (block5_conv3, or that of backbone.feature_block),
weighted by the gradient of the class's logit, and their overlay on the image. Backend-neutral
(keras.ops) apart from the one gradient call, which needs TensorFlow or JAX.
"""

import keras
import matplotlib
import numpy as np
from PIL import Image

from covidxray.errors import PipelineError


def autodiff_backend():
    """The Keras backend, if gradients() can differentiate on it."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise PipelineError(f"Grad-CAM needs the tensorflow or jax Keras backend, not {backend}")
    return backend


def gradients(fn, x):
    """d sum(fn(x)) / dx. Per-sample scores of independent samples give per-sample gradients."""
    if autodiff_backend() == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = keras.ops.sum(fn(x))
        return tape.gradient(total, x)
    import jax

    return jax.grad(lambda v: keras.ops.sum(fn(v)))(x)


def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError as err:
        raise PipelineError(f"the model has no layer {name!r}: Grad-CAM needs a classifier"
                            " built by covidxray.model.classifier") from err


def last_conv(vgg):
    """The backbone's last conv layer: block5_conv3, or that of the block it was cut after."""
    return [layer for layer in vgg.layers if "_conv" in layer.name][-1]


def conv_and_logits(classifier):
    """The classifier as (image -> last conv activations, activations -> class logits).

    The head ends in logits (the probability layer follows it): Grad-CAM follows the
    pre-softmax score. A sigmoid's single logit z becomes (-z, z), the logits of classes 0 and 1.
    """
    extractor, head = _layer(classifier, "features"), _layer(classifier, "head")
    vgg = _layer(extractor, "vgg16")
    conv = keras.Model(vgg.inputs, last_conv(vgg).output)
    image = keras.Input(extractor.input_shape[1:])
    to_conv = keras.Model(image, conv(_layer(extractor, "vgg16_preprocess")(image)))

    def logits(activations):
        # the block's pooling, in float32 whatever the backbone's dtype policy
        z = head(keras.ops.max_pool(activations, pool_size=2, strides=2))
        return keras.ops.concatenate([-z, z], axis=-1) if z.shape[-1] == 1 else z

    return to_conv, logits


def require_gradcam(classifier):
    """Fail at once, rather than after a first batch, if gradcam() cannot run here."""
    autodiff_backend()
    conv_and_logits(classifier)


def gradcam(classifier, images, class_indices):
    """Heatmaps (N x h x w float32 in [0, 1]) of each image's given class over the last conv
    layer."""
    to_conv, logits = conv_and_logits(classifier)
    activations = keras.ops.cast(to_conv(keras.ops.cast(images, "float32")), "float32")
    picked = keras.ops.expand_dims(keras.ops.convert_to_tensor(class_indices, "int32"), -1)

    def score(a):
        return keras.ops.take_along_axis(logits(a), picked, axis=-1)

    weights = keras.ops.mean(gradients(score, activations), axis=(1, 2), keepdims=True)
    maps = keras.ops.relu(keras.ops.sum(weights * activations, axis=-1))
    peak = keras.ops.max(maps, axis=(1, 2), keepdims=True)
    maps = maps / keras.ops.where(peak > 0, peak, 1)  # an all-zero map stays zero
    return keras.ops.convert_to_numpy(maps).astype(np.float32)


def overlay(image, heatmap, alpha=0.4):
    """A heatmap in jet colours over a uint8 RGB image of any size; uint8 RGB out."""
    height, width = image.shape[:2]
    resized = Image.fromarray(np.asarray(heatmap, np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR)
    colours = matplotlib.colormaps["jet"](np.clip(np.asarray(resized), 0, 1))[..., :3] * 255
    return np.round((1 - alpha) * image + alpha * colours).astype(np.uint8)
