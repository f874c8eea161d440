"""The trained head on the backbone's features: pooling, standardisation, Dense layers, logits.

It ends in logits, and training uses from_logits losses: VGG16's features reach the hundreds, so
a sigmoid or softmax saturates to exactly 0 or 1 and, outside TensorFlow, the loss stops giving a
gradient. probability_layer turns logits into probabilities for prediction.
"""

import keras
import numpy as np

from covidxray.model.batching import batch_slices


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


def output_count(n_classes):
    """The head's outputs: one logit (a sigmoid) for two classes, else one per class."""
    return 1 if n_classes == 2 else n_classes


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
            (output_count(n_classes), None, "logits")]:
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
        for batch in batch_slices(len(rows), batch_size):
            pooled = keras.ops.convert_to_numpy(
                pool(view[rows[batch]].astype(np.float32))).astype(np.float64)
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
