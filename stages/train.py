"""train <task>: fit the head on top of the frozen VGG16, with augmentation on every batch.

Writes models/<task>.keras, models/<task>.json (backbone, device, time) and the training
history through DVCLive under metrics/train/<task>/.
"""

import sys
import time

import keras
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from stages.common import (
    METRICS,
    MODELS,
    cli,
    load_images,
    load_params,
    read_split,
    task_argument,
    task_params,
    write_json,
)
from stages.model import build_backbone, build_classifier, build_trainer, fingerprint, weights_file


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


def shuffled_batches(images, labels, batch_size, seed):
    """Training input: a tf.data pipeline on TensorFlow, plain arrays that Keras batches elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return {"x": images, "y": labels, "batch_size": batch_size, "shuffle": True}
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((images, labels))
    data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    # the dataset reshuffles itself each epoch; Keras's own shuffle does not apply to it
    return {"x": data.batch(batch_size).prefetch(tf.data.AUTOTUNE), "shuffle": False}


def main(task):
    params = load_params()
    spec = task_params(params, task)
    classes, size = spec["classes"], params["image_size"]
    seed_everything(params["seed"])
    train, val = read_split("train", classes), read_split("val", classes)
    binary = len(classes) == 2

    backbone = build_backbone(params["backbone"]["weights"], size)
    classifier = build_classifier(len(classes), size, backbone)
    model = build_trainer(classifier, params["augment"])
    model.compile(
        optimizer=keras.optimizers.Adam(spec["lr"]),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    where = device()
    print(f"train {task}: {len(train)} train / {len(val)} val images, classes {classes},"
          f" backbone {params['backbone']['weights']}, on {where}")

    dtype = "float32" if binary else "int32"
    fit_input = shuffled_batches(load_images(train["path"], size),
                                 train["label"].to_numpy(dtype), spec["batch_size"], params["seed"])
    started = time.perf_counter()
    with Live(str(METRICS / "train" / task), dvcyaml=None, save_dvc_exp=False) as live:
        model.fit(
            **fit_input,
            validation_data=(load_images(val["path"], size), val["label"].to_numpy(dtype)),
            validation_batch_size=spec["batch_size"],
            epochs=spec["epochs"],
            callbacks=[DVCLiveCallback(live=live)],
            verbose=2 if not sys.stdout.isatty() else 1,
        )
    seconds = time.perf_counter() - started

    MODELS.mkdir(exist_ok=True)
    classifier.save(MODELS / f"{task}.keras")
    path = weights_file(params["backbone"]["weights"])
    write_json(MODELS / f"{task}.json", {
        "task": task,
        "classes": classes,
        "backbone": {
            "weights": params["backbone"]["weights"],
            "file": path.name if path else None,
            "fingerprint": fingerprint(backbone),
        },
        "device": where,
        "train_images": len(train),
        "val_images": len(val),
        "epochs": spec["epochs"],
        "train_seconds": round(seconds, 1),
    })
    print(f"train {task}: {spec['epochs']} epochs in {seconds:.0f} s")


if __name__ == "__main__":
    cli(main)(task_argument("train"))
