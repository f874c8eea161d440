"""The tutorial's recipe as written, on tf_keras (Keras 2, which still has ImageDataGenerator).

    python -m bench.baseline TASK [--epochs N]     # prints one JSON object

It reads every image from its source file every epoch through flow_from_directory, scales by
1/255 (with featurewise centering, std normalisation and ZCA switched on but never fitted, so
they do nothing but warn), runs each augmented image through the frozen VGG16 every epoch and
holds out validation_split=0.2 of the folder, with the tutorial's epochs and learning rates
whatever params.yaml's tasks say. Its training folder is this project's train and
val splits together, its test folder the test split, both as symlinks; the backbone weights are
those of params.yaml. Seeded, which the tutorial was not.
"""

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import tf_keras
from tf_keras.preprocessing.image import ImageDataGenerator

from covidxray.config.params import load_params
from covidxray.data.splitting import read_split
from covidxray.model.backbone import load_hed, weights_file

SIZE = (150, 150)
BATCH = 10


def tutorial_schedule(n_classes):
    """The tutorial's epochs and learning rate: 20 at 5e-4 for two classes, 100 at 1e-4 for more."""
    return (20, 5e-4) if n_classes == 2 else (100, 1e-4)


def link_folder(root, rows):
    """root/<class>/<n>_<file name> symlinks, the layout flow_from_directory reads."""
    for n, (path, cls) in enumerate(zip(rows["path"], rows["class"])):
        target = Path(root) / cls / f"{n:04d}_{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(path).resolve())
    return str(root)


def tutorial_model(n_classes, weights):
    base = tf_keras.applications.VGG16(include_top=False, input_shape=(*SIZE, 3),
                                       weights="imagenet" if weights == "imagenet" else None)
    path = weights_file(weights)
    if path is not None:
        load_hed(base, path) if weights == "hed" else base.load_weights(path)
    base.trainable = False
    binary = n_classes == 2
    return tf_keras.Sequential([
        base,
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(256, activation="relu"),
        tf_keras.layers.Dense(1 if binary else n_classes,
                              activation="sigmoid" if binary else "softmax"),
    ])


def run(task, epochs, params, folder):
    spec = params.task(task)
    classes = spec.classes
    tutorial_epochs, lr = tutorial_schedule(len(classes))
    epochs = epochs or tutorial_epochs
    tf_keras.utils.set_random_seed(params.seed)
    pool = link_folder(folder / "train", pd.concat([read_split("train", spec),
                                                    read_split("val", spec)]))
    test = link_folder(folder / "test", read_split("test", spec))
    mode = "binary" if len(classes) == 2 else "categorical"
    augmenting = ImageDataGenerator(
        rescale=1 / 255, featurewise_center=True, featurewise_std_normalization=True,
        zca_whitening=True, rotation_range=50, width_shift_range=0.2, height_shift_range=0.2,
        shear_range=0.25, zoom_range=0.1, channel_shift_range=20, horizontal_flip=True,
        vertical_flip=True, validation_split=0.2, fill_mode="constant")
    flow = {"target_size": SIZE, "batch_size": BATCH, "class_mode": mode, "seed": params.seed}
    train = augmenting.flow_from_directory(pool, subset="training", **flow)
    val = augmenting.flow_from_directory(pool, subset="validation", **flow)
    model = tutorial_model(len(classes), params.backbone.weights)
    model.compile(optimizer=tf_keras.optimizers.Adam(lr),
                  loss=f"{mode}_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    # the tutorial's whole batches per epoch; at least one, and no validation without images,
    # so that the tests' tiny split runs too
    steps = max(1, train.samples // BATCH)
    validation = {"validation_data": val, "validation_steps": max(1, val.samples // BATCH)}
    model.fit(train, steps_per_epoch=steps, epochs=epochs, verbose=2,
              **(validation if val.samples else {}))
    seconds = time.perf_counter() - started
    tests = ImageDataGenerator(rescale=1 / 255).flow_from_directory(
        test, shuffle=False, **flow)
    probs = model.predict(tests, verbose=0)
    predicted = (probs[:, 0] > 0.5).astype(int) if mode == "binary" else probs.argmax(axis=1)
    return {"task": task, "epochs": epochs, "train_seconds": round(seconds, 1),
            "train_images": train.samples,
            "images_trained": epochs * min(train.samples, steps * BATCH),
            "test_accuracy": float(np.mean(predicted == tests.classes)), "test_n": len(predicted)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--epochs", type=int, help="default: the tutorial's (20 or 100)")
    args = parser.parse_args()
    warnings.simplefilter("once")  # the unfitted featurewise/ZCA warning, once, not per batch
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run(args.task, args.epochs, load_params(), Path(folder))), flush=True)


if __name__ == "__main__":
    main()
