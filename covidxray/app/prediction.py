"""A trained model applied to new chest X-rays: loading it with the checks that it fits its task,
decoding images exactly as its training images were, class probabilities and Grad-CAM overlays.
covidxray/app/predict.py (the command line) and covidxray/app/demo.py (the web page) both use it."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from covidxray.config.schema import Preprocess
from covidxray.data.images import cropped, load_images, open_rgb
from covidxray.errors import PipelineError
from covidxray.evaluation import gradcam, ood
from covidxray.files import read_json
from covidxray.model.classifier import (head_probabilities, load_classifier, model_outputs,
                                        probabilities)
from covidxray.model.head import output_count
from covidxray.paths import MODELS

OVERLAY_SIDE = 1024  # pixels: the longest side of a Grad-CAM overlay


@dataclass(frozen=True)
class Classifier:
    """A model with its class names and how to decode images for it."""
    model: object
    classes: list
    size: int  # pixels a side
    preprocess: Preprocess
    record: dict  # train's record of the model (models/<task>.json), {} when there is none
    xray_check: ood.XrayCheck = None  # models/ood.npz's: does an input look like a training X-ray?

    def decode(self, path):
        """The image as the model's training images were decoded."""
        return load_images([path], self.size, self.preprocess)[0]


def image_size(model, path):
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or not shape[1] or shape[1] != shape[2]:
        raise PipelineError(f"{path}: not an image classifier (input shape {shape},"
                            " expected (None, size, size, 3))")
    return shape[1]


def tasks_where(params, fits):
    """The tasks of params.yaml whose classes (a list) fit."""
    return [name for name, task in params.tasks.items() if fits(list(task.classes))]


def use_instead(tasks, otherwise):
    return "use --task " + " or --task ".join(tasks) if tasks else otherwise


def unknown_classes(record, fitting):
    """What to say of a model whose outputs do not fit and whose record is missing: which
    classes it was trained on, in which order, is unknown, so no task is a sure answer."""
    return (f"without its record {record} (train writes it beside the model) its classes are"
            " unknown; " + (f"tasks of params.yaml with as many outputs: {', '.join(fitting)}"
                            if fitting else "no task of params.yaml has as many outputs"))


def made_for(params, made):
    """The tasks of params.yaml with the classes of train's record of a model, the one it
    names alone when it is one of them (binary and binary_mixed share their classes)."""
    tasks = tasks_where(params, lambda classes: classes == made["classes"])
    return [made["task"]] if made.get("task") in tasks else tasks


def load(params, task, path=None, xray_check=None):
    """Task `task`'s classifier (models/<task>.keras unless `path`), checked against params.yaml
    and train's record beside it; the record, not params.yaml, says how its images were
    preprocessed. With it `xray_check`, or when None the ood stage's (models/ood.npz, whatever
    `path`; None where that stage has not run)."""
    classes = list(params.task(task).classes)
    given = path is not None
    path = Path(path) if given else MODELS / f"{task}.keras"
    if not path.is_file():
        raise PipelineError(f"no such model file {path}"
                            + ("" if given else "; train it with `dvc repro`"))
    record = path.with_suffix(".json")
    made = read_json(record) if record.is_file() else {}
    trained = made.get("classes", classes)
    if trained != classes:
        retrain = (f"no task of params.yaml has those classes now; retrain it with"
                   f" `dvc repro train@{made.get('task', task)}`")
        raise PipelineError(f"{record}: the model was trained on classes {trained}, params.yaml"
                            f" tasks.{task}.classes are {classes};"
                            f" {use_instead(made_for(params, made), retrain)}")
    model = load_classifier(path)
    outputs = model.output_shape[-1]
    if outputs != output_count(len(classes)):
        fitting = tasks_where(params, lambda other: output_count(len(other)) == outputs)
        hint = (use_instead(fitting, "no task of params.yaml fits it") if made
                else unknown_classes(record, fitting))
        raise PipelineError(f"{path}: {outputs} output(s) do not fit the {len(classes)} classes"
                            f" of params.yaml tasks.{task}.classes ({', '.join(classes)});"
                            f" {hint}")
    preprocess = Preprocess(**made["preprocess"]) if "preprocess" in made else params.preprocess
    return Classifier(model, classes, image_size(model, path), preprocess, made,
                      xray_check or ood.load_xray_check(extractor=frozen_extractor(model, made)))


def frozen_extractor(model, made):
    """The classifier's VGG16 (its `features` part) where train's record says it was not
    fine-tuned, for the ood check to share; else None."""
    names = [layer.name for layer in model.layers]
    if made.get("backbone", {}).get("trainable_blocks", 1) or "features" not in names:
        return None
    return model.get_layer("features")


def decode(classifier, paths):
    """The images that decode, by position in paths, and the error of each that does not."""
    images, errors = {}, {}
    for i, path in enumerate(paths):
        try:
            images[i] = classifier.decode(path)
        except PipelineError as err:
            errors[i] = str(err)
    return images, errors


def classify(classifier, paths, decoded=None):
    """One record per path, in order ({path, prediction, probabilities} or {path, error}), and
    (image, predicted class index) per decoded image, by position. An image that does not look
    like a training X-ray (classifier.xray_check) gets prediction None and `unreliable`, saying why;
    its probabilities stay, for inspection. `decoded`: decode(classifier, paths), if done
    already (predict decodes the next batch while this one runs)."""
    images, errors = decoded or decode(classifier, paths)
    records = [{"path": str(path)} for path in paths]
    for i, error in errors.items():
        records[i]["error"] = error
    if not images:
        return records, {}
    classes = classifier.classes
    probs, why = judged(classifier, paths, images)
    for i, p in zip(images, probs):
        records[i]["prediction"] = classes[p.argmax()]
        records[i]["probabilities"] = {c: round(float(v), 6) for c, v in zip(classes, p)}
    for i, reason in zip(images, why):
        if reason:
            records[i].update(prediction=None, unreliable=reason)
    return records, {i: (images[i], p.argmax()) for i, p in zip(images, probs)}


def judged(classifier, paths, images):
    """The decoded images' class probabilities, and why each one's class is not to be read
    (None: it looks like a training X-ray; all None without a check). Where the check shares the
    classifier's VGG16 and decoding, VGG16 runs once for both; elsewhere the images are decoded
    again only where the reference's were decoded otherwise than the model's."""
    check, model, pixels = classifier.xray_check, classifier.model, np.stack(list(images.values()))
    if check is None:
        return probabilities(model, pixels, len(pixels)), [None] * len(pixels)
    same = (check.reference.size, check.reference.preprocess) == (classifier.size,
                                                                  classifier.preprocess)
    if same and check.extractor is not None and check.extractor in model.layers:
        features = model_outputs(check.extractor, pixels, len(pixels))
        return (head_probabilities(model.get_layer("head"), features, len(pixels)),
                check.unreliable_features(features))
    again = pixels if same else check.decode([paths[i] for i in images])
    return probabilities(model, pixels, len(pixels)), check.unreliable(again)


def overlays(classifier, paths, predicted):
    """The Grad-CAM of each predicted image's class over the image (less the crop its training
    images had), at most OVERLAY_SIDE pixels a side, as RGB arrays, by position in paths."""
    images, classes = zip(*predicted.values())
    maps = gradcam.gradcam(classifier.model, np.stack(images), list(classes))
    return {i: gradcam.overlay(np.asarray(overlay_base(paths[i], classifier.preprocess.crop)),
                               heatmap)
            for i, heatmap in zip(predicted, maps)}


def overlay_base(path, crop):
    """The image an overlay is drawn on, shrunk to OVERLAY_SIDE: a 9000-px scan blended at full
    size took gigabytes for a heatmap of a few cells."""
    image = cropped(open_rgb(path), crop)
    image.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE), Image.Resampling.BILINEAR)
    return image
