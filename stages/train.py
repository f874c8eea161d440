"""train <task>: fit the head on top of the frozen VGG16, on augmented images.

With `bank.views` > 0 (the default) the head trains on the augmentation bank of the features
stage: each epoch shows it one stored augmented view of every training image. With 0 every
epoch augments the decoded images afresh and runs them through VGG16 (the tutorial's way, many
times slower on a CPU). Writes models/<task>.keras (the whole classifier, raw RGB in),
models/<task>.json (backbone, device, time) and the training history through DVCLive under
metrics/train/<task>/.
"""

import math
import sys
import time

import keras
import numpy as np
from dvclive import Live
from dvclive.utils import standardize_metric_name

from stages.common import (
    FEATURES,
    METRICS,
    MODELS,
    cli,
    load_params,
    prepared_images,
    read_arrays,
    read_split,
    task_argument,
    task_params,
    write_json,
)
from stages.model import (
    build_backbone,
    build_classifier,
    build_extractor,
    build_head,
    build_trainer,
    fingerprint,
    weights_file,
)


def seed_everything(seed):
    """Same params on the same machine, same model: seeded RNGs and deterministic kernels."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def device():
    """Which backend and device Keras trains on, e.g. `tensorflow:cpu` or `jax:gpu`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        gpu = jax.default_backend() == "gpu"
    else:
        import torch

        gpu = torch.cuda.is_available()
    return f"{backend}:{'gpu' if gpu else 'cpu'}"


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


class BankBatches(keras.utils.PyDataset):
    """Batches from the augmentation bank: per epoch, one view of every image, reshuffled.

    Each image walks through its views in its own random order, so every view is used equally
    often, and each epoch's order depends only on (seed, epoch): reruns give the same batches.
    """

    def __init__(self, bank, labels, batch_size, seed):
        super().__init__()
        self.bank, self.labels, self.batch_size, self.seed = bank, labels, batch_size, seed
        views, n = bank.shape[:2]
        rng = np.random.default_rng(seed)
        self.view_order = np.stack([rng.permutation(views) for _ in range(n)])
        self.epoch = -1
        self.on_epoch_begin()

    def on_epoch_begin(self):
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        images = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        views = self.view_order[images, self.epoch % len(self.bank)]
        return self.bank[views, images], self.labels[images]


def shuffled_batches(images, labels, batch_size, seed):
    """Decoded images for per-epoch augmentation: tf.data on TensorFlow, plain arrays elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return {"x": images, "y": labels, "batch_size": batch_size, "shuffle": True}
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((images, labels))
    data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    # the dataset reshuffles itself each epoch; Keras's own shuffle does not apply to it
    return {"x": data.batch(batch_size).prefetch(tf.data.AUTOTUNE), "shuffle": False}


def bank_inputs(features, train, val, n_classes, batch_size, seed):
    """fit() arguments for training the head alone on the features stage's outputs."""
    bank = features["bank"][:, train["image"].to_numpy()]
    return {"x": BankBatches(bank, targets(train, n_classes), batch_size, seed),
            "validation_data": (features["plain"][val["image"].to_numpy()],
                                targets(val, n_classes))}


def image_inputs(train, val, n_classes, batch_size, seed):
    """fit() arguments for per-epoch augmentation of the decoded images."""
    return {**shuffled_batches(prepared_images(train), targets(train, n_classes), batch_size,
                               seed),
            "validation_data": (prepared_images(val), targets(val, n_classes))}


def targets(rows, n_classes):
    """Labels as fit() wants them: float 0/1 for a sigmoid, class indices for a softmax."""
    return rows["label"].to_numpy("float32" if n_classes == 2 else "int32")


def fit(model, inputs, spec, n_classes, callbacks=(), verbose=None):
    """Compile with the task's loss and learning rate, then train for its epochs."""
    binary = n_classes == 2
    model.compile(
        optimizer=keras.optimizers.Adam(spec["lr"]),
        loss=keras.losses.BinaryCrossentropy(from_logits=True) if binary
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # the model ends in logits: a logit above 0 is a probability above 0.5
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy") if binary
                 else keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    model.fit(**inputs, validation_batch_size=spec["batch_size"], epochs=spec["epochs"],
              callbacks=list(callbacks),
              verbose=(2 if not sys.stdout.isatty() else 1) if verbose is None else verbose)


def main(task):
    params = load_params()
    spec = task_params(params, task)
    classes, seed, views = spec["classes"], params["seed"], params["bank"]["views"]
    seed_everything(seed)
    train, val = read_split("train", classes), read_split("val", classes)

    weights = params["backbone"]["weights"]
    backbone = build_backbone(weights, params["image_size"], params["backbone"]["precision"])
    extractor = build_extractor(backbone)
    head = build_head(len(classes), extractor.output_shape[1:])
    classifier = build_classifier(extractor, head)
    if views:
        model = head
        inputs = bank_inputs(read_arrays(FEATURES), train, val, len(classes), spec["batch_size"],
                             seed)
    else:
        model = build_trainer(extractor, head, params["augment"])
        inputs = image_inputs(train, val, len(classes), spec["batch_size"], seed)
    where = device()
    mode = f"bank of {views} views" if views else "per-epoch augmentation"
    print(f"train {task}: {len(train)} train / {len(val)} val images, classes {classes},"
          f" backbone {weights}, {mode}, on {where}")

    started = time.perf_counter()
    with Live(str(METRICS / "train" / task), dvcyaml=None, save_dvc_exp=False) as live:
        fit(model, inputs, spec, len(classes), callbacks=[LiveHistory(live)])
    seconds = time.perf_counter() - started

    MODELS.mkdir(exist_ok=True)
    classifier.save(MODELS / f"{task}.keras")
    path = weights_file(weights)
    write_json(MODELS / f"{task}.json", {
        "task": task,
        "classes": classes,
        "backbone": {
            "weights": weights,
            "file": path.name if path else None,
            "fingerprint": fingerprint(backbone),
            "precision": params["backbone"]["precision"],
        },
        "bank_views": views,
        "device": where,
        "train_images": len(train),
        "val_images": len(val),
        "epochs": spec["epochs"],
        "train_seconds": round(seconds, 1),
    })
    print(f"train {task}: {spec['epochs']} epochs in {seconds:.0f} s")


if __name__ == "__main__":
    cli(main)(task_argument("train"))
