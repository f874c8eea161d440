"""What fit() reads: the bank's batches (one stored view of every training image per epoch),
rows of an array or of Shards a batch at a time, decoded images for per-epoch augmentation, and
each process's even share of a batch under a distribution. Also the labels and loss weights."""

import keras
import numpy as np

from covidxray.data.shards import prepared_images
from covidxray.model.batching import batch_count, batch_slice
from covidxray.model.devices import batch_split, padded


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
        return batch_count(len(self.labels), self.batch_size)

    def __getitem__(self, index):
        images = self.order[batch_slice(index, self.batch_size)]
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
        return batch_count(len(self.rows), self.batch_size)

    def __getitem__(self, index):
        part = batch_slice(index, self.batch_size)
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
