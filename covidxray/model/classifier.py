"""The saved classifier: raw RGB in, class probabilities out (VGG16's input scaling, backbone,
head, probability layer), saved so that the same model gives the same bytes, loaded with a clear
error, and its probabilities on images or on backbone features.
"""

import functools
import json
import zipfile
from pathlib import Path

import keras
import numpy as np

from covidxray.errors import PipelineError
from covidxray.files import replacing
from covidxray.model.augment import augmenter
from covidxray.model.batching import batch_slices
from covidxray.model.devices import undistributed
from covidxray.model.head import probability_layer
from covidxray.paths import MODELS


@keras.saving.register_keras_serializable(package="covidxray")
class VGGPreprocess(keras.layers.Layer):
    """RGB in 0-255 to what VGG16 was trained on: BGR minus the ImageNet mean (not 1/255)."""

    # A saved classifier records the module of its custom layers: every model saved since the
    # first names covidxray.model, which serves it (covidxray/model/__init__.py), so a model is
    # the same bytes, and loads, whichever module of the library defines the layer.
    __module__ = "covidxray.model"

    def call(self, images):
        return keras.applications.vgg16.preprocess_input(images)


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
    """The saved classifier, or a PipelineError naming the file, the reason and what to do."""
    path = Path(path)
    try:
        # Keras calls a .keras file that is not a whole zip archive "File not found"
        if path.suffix == ".keras" and path.is_file() and not zipfile.is_zipfile(path):
            raise zipfile.BadZipFile("not a whole zip archive")
        return keras.models.load_model(path)
    except zipfile.BadZipFile as err:
        raise PipelineError(f"{path}: cannot load the model, not a readable .keras model ({err};"
                            f" damaged or truncated?); {restoring(path)}") from err
    except (OSError, ValueError, TypeError) as err:
        raise PipelineError(f"{path}: cannot load the model ({err})") from err


def restoring(path):
    """How to get a whole model file back: train writes models/<task>.keras and DVC tracks it."""
    if path.parent.resolve() != MODELS.resolve():
        return "replace it with a whole copy"
    return (f"restore it with `dvc checkout --force {path}` (plain `dvc checkout` leaves a"
            f" modified file as it is) or rebuild it with `dvc repro train@{path.stem}`")


def probabilities(model, images, batch_size):
    """Class probabilities, one column per class, for binary (sigmoid) and softmax models alike."""
    with undistributed(model) as local:
        return class_columns(local.predict(images, batch_size=batch_size, verbose=0))


def class_columns(p):
    """A sigmoid's one column as two (the negative class first); a softmax's as they are."""
    return np.hstack([1 - p, p]) if p.shape[1] == 1 else p


def model_outputs(model, arrays, batch_size):
    """A model's outputs on arrays (or batches of them), in float32, on this process's copy."""
    with undistributed(model) as local:
        return np.asarray(local.predict(arrays, batch_size=batch_size, verbose=0), np.float32)


def head_probabilities(head, features, batch_size):
    """Class probabilities of a head (which ends in logits) on backbone features (an array, or
    RowBatches), the head called on each batch as predict would call it. Not predict itself:
    it compiles a step for each new head, 0.3 s where the call takes milliseconds, and holdout
    and repeat score hundreds of heads."""
    batches = ((features[part] for part in batch_slices(len(features), batch_size))
               if isinstance(features, np.ndarray) else (features[i] for i in range(len(features))))
    with undistributed(scoring_head(head)) as local:
        parts = [keras.ops.convert_to_numpy(local(x, training=False)) for x in batches]
    width = local.output_shape[-1]
    return class_columns(np.concatenate(parts) if parts else np.empty((0, width), np.float32))


@functools.cache
def scoring_head(head):
    """The head and its probability layer, built once per head: each new model compiles its
    own predict step, which cost predict about 0.3 s a batch."""
    return keras.Sequential([head, probability_layer(head)])
