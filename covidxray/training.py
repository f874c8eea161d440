"""Training: seeding, the bank's batches, and fitting a head (or the tutorial's whole trainer).

train and repeat both fit heads here, so a split of `repeat` is trained exactly as the
pipeline's own model is.
"""

import math
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
from dvclive.utils import standardize_metric_name

from covidxray.common import HEAD_LAYERS
from covidxray.distribution import batch_split, padded, undistributed
from covidxray.model import adapt_head, build_head, head_probabilities
from covidxray.shards import prepared_images, read_features, view_name, write_shards


def seed_everything(seed):
    """Same params on the same machine, same model: seeded RNGs and deterministic kernels."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class LiveHistory(keras.callbacks.Callback):
    """Each epoch's logs into DVCLive; dvclive.keras's own callback imports TensorFlow."""

    def __init__(self, live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            # accuracy -> train/accuracy, val_accuracy -> eval/accuracy, as DVCLive names them
            self.live.log_metric(standardize_metric_name(name, "dvclive.keras"), float(value))
        self.live.next_step()


def gather(views, view_of, rows):
    """float32 rows: views[view_of[i]][rows[i]] for each i, each view read once."""
    out = None
    for view in np.unique(view_of):
        pick = view_of == view
        part = views[view][rows[pick]]
        if out is None:
            out = np.empty((len(rows), *part.shape[1:]), np.float32)
        out[pick] = part
    return out


class BankBatches(keras.utils.PyDataset):
    """Batches from the augmentation bank: per epoch, one view of every image, reshuffled.

    views: a sequence of arrays or Shards over all manifest images, one per view; rows: the
    training images' manifest rows. Only a batch's rows are read. Each image walks through its
    views in its own random order, so every view is used equally often, and each epoch's order
    depends only on (seed, epoch): reruns give the same batches.
    """

    def __init__(self, views, rows, labels, batch_size, seed, weights=None):
        super().__init__()
        self.views, self.rows, self.labels = views, np.asarray(rows), labels
        self.batch_size, self.seed, self.weights = batch_size, seed, weights
        rng = np.random.default_rng(seed)
        self.view_order = np.stack([rng.permutation(len(views)) for _ in range(len(rows))])
        self.epoch = -1
        self.on_epoch_begin()

    def on_epoch_begin(self):
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        images = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        views = self.view_order[images, self.epoch % len(self.views)]
        batch = gather(self.views, views, self.rows[images]), self.labels[images]
        return batch if self.weights is None else (*batch, self.weights[images])


class RowBatches(keras.utils.PyDataset):
    """An array's (or Shards') rows in order, a batch at a time, with their labels if given:
    validation data and predictions that never hold more than a batch."""

    def __init__(self, array, rows, batch_size, labels=None):
        super().__init__()
        self.array, self.rows, self.labels, self.batch_size = array, rows, labels, batch_size

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = self.array[self.rows[part]].astype(np.float32)
        return x if self.labels is None else (x, self.labels[part])


class EvenShare(keras.utils.PyDataset):
    """This process's share of each batch under a JAX distribution (split: batch_split()).
    Keras splits a batch over the devices, which needs equal parts, and with several processes
    joins their shares, in process order. A batch that does not divide evenly is padded with
    rows of weight 0, and its real rows weigh padded / real times more, so its mean loss, and
    the gradient, stay as they were."""

    def __init__(self, batches, split):
        super().__init__()
        self.batches, (self.index, self.processes, self.devices) = batches, split

    def on_epoch_begin(self):
        self.batches.on_epoch_begin()

    def on_epoch_end(self):
        self.batches.on_epoch_end()

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        x, y, *weights = self.batches[index]
        real = len(y)
        x, y, weight = (padded(a, self.devices) for a in (
            x, y, weights[0] if weights else np.ones(real, np.float32)))
        weight = weight * (len(y) / real)
        share = len(y) // self.processes
        return tuple(a[self.index * share:(self.index + 1) * share] for a in (x, y, weight))


def shared(inputs, batch_size):
    """fit() arguments as this process feeds them: unchanged without a Keras distribution,
    else even shares of every training and validation batch (EvenShare)."""
    split = batch_split()
    if split is None:
        return inputs
    val = inputs["validation_data"]
    if not isinstance(val, keras.utils.PyDataset):
        val = RowBatches(val[0], np.arange(len(val[0])), batch_size, val[1])
    return {**inputs, "x": EvenShare(inputs["x"], split),
            "validation_data": EvenShare(val, split)}


def batches_of(array, rows, batch_size, in_memory, labels=None):
    """An array's (or Shards') rows for fit's validation or for predict: read into memory when
    there are at most `in_memory` (a shard's worth, which a stage may hold anyway, and Keras
    runs arrays faster), else a batch at a time (RowBatches). The same batches either way."""
    if len(rows) > in_memory:
        return RowBatches(array, rows, batch_size, labels)
    x = array[rows].astype(np.float32)
    return x if labels is None else (x, labels)


def targets(rows, n_classes):
    """Labels as fit() wants them: float 0/1 for a sigmoid, class indices for a softmax."""
    return rows["label"].to_numpy("float32" if n_classes == 2 else "int32")


def training_views(features, plain_view):
    """The bank's views (arrays or Shards over all images); the unaugmented one joins if asked."""
    return [*features["bank"], features["plain"]] if plain_view else list(features["bank"])


def bank_inputs(features, train, val, n_classes, batch_size, seed, in_memory, plain_view=False,
                weighting="none"):
    """fit() arguments for training the head alone on the features stage's outputs."""
    weights = sample_weights(train, n_classes, weighting)
    return {"x": BankBatches(training_views(features, plain_view), train["image"].to_numpy(),
                             targets(train, n_classes), batch_size, seed, weights),
            "validation_data": batches_of(features["plain"], val["image"].to_numpy(), batch_size,
                                          in_memory, targets(val, n_classes))}


def shuffled_batches(images, labels, batch_size, seed, weights=None):
    """Decoded images for per-epoch augmentation: tf.data on TensorFlow, elsewhere the bank's
    batches over the one view of them, which EvenShare can split."""
    if keras.backend.backend() != "tensorflow":
        return {"x": BankBatches([images], np.arange(len(images)), labels, batch_size, seed,
                                 weights)}
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(
        (images, labels) if weights is None else (images, labels, weights))
    data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    # the dataset reshuffles itself each epoch; Keras's own shuffle does not apply to it
    return {"x": data.batch(batch_size).prefetch(tf.data.AUTOTUNE), "shuffle": False}


def image_inputs(train, val, n_classes, batch_size, seed, weighting="none"):
    """fit() arguments for per-epoch augmentation of the decoded images."""
    return {**shuffled_batches(prepared_images(train), targets(train, n_classes), batch_size,
                               seed, sample_weights(train, n_classes, weighting)),
            "validation_data": (prepared_images(val), targets(val, n_classes))}


def sample_weights(rows, n_classes, weighting):
    """Each training row's loss weight per head.class_weight, or None (`none`).

    balanced: n / (k * rows of its class), so each of the k classes adds the same to the loss.
    balanced_by_source: also split evenly between the sources of a class (Kermany children and
    NIH adults among the normals), as batches drawn evenly from every source would be.
    """
    if weighting == "none":
        return None
    by_source = weighting == "balanced_by_source"
    sources = rows.groupby("label")["source"].transform("nunique") if by_source else 1
    size = rows.groupby(["label", "source"] if by_source else "label")["label"].transform("size")
    return (len(rows) / (n_classes * sources * size)).to_numpy("float32")


class BestEpoch(keras.callbacks.EarlyStopping):
    """Keep the weights of the epoch with the lowest validation loss (never stops early)."""

    def __init__(self, epochs):
        super().__init__(monitor="val_loss", patience=epochs, restore_best_weights=True)


def fit(model, inputs, spec, n_classes, restore_best=False, callbacks=(), verbose=None):
    """Compile with the task's loss and learning rate (spec), then train for its epochs.

    Returns the 1-based epoch whose weights the model ends with: with restore_best the one of
    the lowest validation loss, else the last.
    """
    binary = n_classes == 2
    model.compile(
        optimizer=keras.optimizers.Adam(spec["lr"]),
        loss=keras.losses.BinaryCrossentropy(from_logits=True) if binary
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # the model ends in logits: a logit above 0 is a probability above 0.5
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy") if binary
                 else keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    best = [BestEpoch(spec["epochs"])] if restore_best else []
    model.fit(**shared(inputs, spec["batch_size"]), validation_batch_size=spec["batch_size"],
              epochs=spec["epochs"], callbacks=[*callbacks, *best],
              verbose=(2 if not sys.stdout.isatty() else 1) if verbose is None else verbose)
    return best[0].best_epoch + 1 if best else spec["epochs"]


def through(model, arrays, batch_size):
    with undistributed(model) as local:
        return np.asarray(local.predict(arrays, batch_size=batch_size, verbose=0), np.float32)


def carried(top, features, batch_size, shard_size, folder):
    """The bank and plain features carried through the (not yet trained) top blocks, written
    to folder as sharded arrays and read back lazily (read_features)."""
    named = {"plain": features["plain"],
             **{view_name(i): view for i, view in enumerate(features["bank"])}}
    for name, array in named.items():
        outputs = (through(top, array[start:start + batch_size], batch_size)
                   for start in range(0, len(array), batch_size))
        write_shards(folder / name, outputs, top.output_shape[1:], "float32", shard_size)
    return read_features(folder)


def fit_on_bank(head, features, train, val, recipe, top=None, callbacks=(), verbose=None):
    """Train a head on the bank: the recipe's `task` spec, checked `head` params, `plain_view`,
    `fine_tune` params and `seed`.

    With `top` (the backbone's trainable blocks, over a bank stored before them) the head first
    trains on the frozen blocks' output, then both train together at the fine-tuning learning
    rate, the keras.io way, so the random head does not wreck the pretrained blocks.
    Returns the trained model from bank features to logits (the head, or the top blocks and
    the head) and the epochs kept: {"head": n} and, with fine-tuning, "fine_tune".
    """
    spec, hp, plain_view = recipe["task"], recipe["head"], recipe["plain_view"]
    n_classes, batch, seed = len(spec["classes"]), spec["batch_size"], recipe["seed"]
    settings = {"restore_best": hp["restore_best"], "callbacks": callbacks, "verbose": verbose}
    batches = {"in_memory": recipe["shard_size"], "plain_view": plain_view,
               "weighting": hp["class_weight"]}
    with tempfile.TemporaryDirectory(prefix="carried-") as folder:
        head_features = (carried(top, features, batch, recipe["shard_size"], Path(folder))
                         if top is not None else features)
        adapt_head(head, training_views(head_features, plain_view), hp["variance_floor"],
                   train["image"].to_numpy())
        kept = {"head": fit(head, bank_inputs(head_features, train, val, n_classes, batch, seed,
                                              **batches), spec, n_classes, **settings)}
    if top is None:
        return head, kept
    model = keras.Sequential([top, head])
    tune = {**spec, **{key: recipe["fine_tune"][key] for key in ("lr", "epochs")}}
    kept["fine_tune"] = fit(model, bank_inputs(features, train, val, n_classes, batch, seed,
                                               **batches), tune, n_classes, **settings)
    return model, kept


def head_on_bank(bank, train, val, recipe, seed, top=None):
    """A fresh head (and `top`'s blocks) trained on the bank for one split's rows, as train
    trains one, seeded with `seed`: the model from bank features to logits."""
    seed_everything(seed)
    shape = top.output_shape[1:] if top is not None else bank["plain"].shape[1:]
    head = build_head(len(recipe["task"]["classes"]), shape,
                      **{key: recipe["head"][key] for key in HEAD_LAYERS})
    return fit_on_bank(head, bank, train, val, {**recipe, "seed": seed}, top, verbose=0)[0]


def bank_probabilities(model, plain, rows, recipe):
    """Class probabilities of a model of bank features (head_on_bank) on rows' plain view."""
    batch = recipe["task"]["batch_size"]
    return head_probabilities(model, batches_of(plain, rows["image"].to_numpy(), batch,
                                                recipe["shard_size"]), batch)
