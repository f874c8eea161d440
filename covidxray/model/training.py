"""Training: seeding, DVCLive logging, and fitting a head (or the tutorial's whole trainer) on the
bank, with fine-tuning of the top blocks when the params ask for it.

train and repeat both fit heads here, so a split of `repeat` is trained exactly as the
pipeline's own model is.
"""

import dataclasses
import sys
import tempfile
from pathlib import Path

import keras
from dvclive.utils import standardize_metric_name

from covidxray.data.shards import read_features, view_name, write_shards
from covidxray.model.batching import batch_slices
from covidxray.model.classifier import head_probabilities, model_outputs
from covidxray.model.head import adapt_head, build_head
from covidxray.model.inputs import bank_inputs, batches_of, shared, training_views
from covidxray.model.solver import solve_head


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


class BestEpoch(keras.callbacks.EarlyStopping):
    """Keep the weights of the epoch with the lowest validation loss (never stops early)."""

    def __init__(self, epochs):
        super().__init__(monitor="val_loss", patience=epochs, restore_best_weights=True)


def fit(model, inputs, task, restore_best=False, callbacks=(), verbose=None):
    """Compile with the task's loss and learning rate, then train for its epochs.

    Returns the 1-based epoch whose weights the model ends with: with restore_best the one of
    the lowest validation loss, else the last.
    """
    binary = len(task.classes) == 2
    model.compile(
        optimizer=keras.optimizers.Adam(task.lr),
        loss=keras.losses.BinaryCrossentropy(from_logits=True) if binary
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # the model ends in logits: a logit above 0 is a probability above 0.5
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy") if binary
                 else keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    best = [BestEpoch(task.epochs)] if restore_best else []
    model.fit(**shared(inputs, task.batch_size), validation_batch_size=task.batch_size,
              epochs=task.epochs, callbacks=[*callbacks, *best],
              verbose=(2 if not sys.stdout.isatty() else 1) if verbose is None else verbose)
    return best[0].best_epoch + 1 if best else task.epochs


def top_block_features(top, features, batch_size, shard_size, folder):
    """The bank and plain features carried through the (not yet trained) top blocks, written
    to folder as sharded arrays and read back lazily (read_features)."""
    named = {"plain": features["plain"],
             **{view_name(i): view for i, view in enumerate(features["bank"])}}
    for name, array in named.items():
        outputs = (model_outputs(top, array[rows], batch_size)
                   for rows in batch_slices(len(array), batch_size))
        write_shards(folder / name, outputs, top.output_shape[1:], "float32", shard_size)
    return read_features(folder)


def fit_on_bank(head, features, train, val, recipe, top=None, callbacks=(), verbose=None):
    """Train a head on the bank per the recipe (params.Recipe): its task, head, bank, backbone
    (for fine-tuning) and seed.

    With `top` (the backbone's trainable blocks, over a bank stored before them) the head first
    trains on the frozen blocks' output, then both train together at the fine-tuning learning
    rate, the keras.io way, so the random head does not wreck the pretrained blocks.
    A linear head on the frozen bank (recipe.solver lbfgs) is fitted at once instead
    (covidxray/model/solver.py).
    Returns the trained model from bank features to logits (the head, or the top blocks and
    the head) and the epochs kept: {"head": n} and, with fine-tuning, "fine_tune"; or the
    solver's iterations, {"lbfgs": n}.
    """
    task, hp, plain_view = recipe.task, recipe.head, recipe.features.plain_view
    n_classes, batch, seed = len(task.classes), task.batch_size, recipe.seed
    settings = {"restore_best": hp.restore_best, "callbacks": callbacks, "verbose": verbose}
    batches = {"in_memory": recipe.shard_size, "plain_view": plain_view,
               "weighting": hp.class_weight}
    if recipe.solver == "lbfgs":  # the linear head on the frozen bank: its optimum at once
        adapt_head(head, training_views(features, plain_view), hp.variance_floor,
                   train["image"].to_numpy())
        return head, solve_head(head, features, train, val, recipe, callbacks)
    with tempfile.TemporaryDirectory(prefix="carried-") as folder:
        head_features = (top_block_features(top, features, batch, recipe.shard_size, Path(folder))
                         if top is not None else features)
        adapt_head(head, training_views(head_features, plain_view), hp.variance_floor,
                   train["image"].to_numpy())
        kept = {"head": fit(head, bank_inputs(head_features, train, val, n_classes, batch, seed,
                                              **batches), task, **settings)}
    if top is None:
        return head, kept
    model = keras.Sequential([top, head])
    tune = dataclasses.replace(task, lr=recipe.backbone.fine_tune_lr,
                               epochs=recipe.backbone.fine_tune_epochs)
    kept["fine_tune"] = fit(model, bank_inputs(features, train, val, n_classes, batch, seed,
                                               **batches), tune, **settings)
    return model, kept


def head_on_bank(bank, train, val, recipe, seed, top=None):
    """A fresh head (and `top`'s blocks) trained on the bank for one split's rows, as train
    trains one, seeded with `seed`: the model from bank features to logits."""
    seed_everything(seed)
    shape = top.output_shape[1:] if top is not None else bank["plain"].shape[1:]
    head = build_head(len(recipe.task.classes), shape, **recipe.head.layers())
    return fit_on_bank(head, bank, train, val, dataclasses.replace(recipe, seed=seed), top,
                       verbose=0)[0]


def bank_probabilities(model, plain, rows, recipe):
    """Class probabilities of a model of bank features (head_on_bank) on rows' plain view."""
    batch = recipe.task.batch_size
    return head_probabilities(model, batches_of(plain, rows["image"].to_numpy(), batch,
                                                recipe.shard_size), batch)
