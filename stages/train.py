"""train <task>: fit the head (and, with backbone.trainable_blocks, VGG16's last blocks).

The head trains on the bank of the features stage: each epoch shows it one stored view of every
training image, cycling through `features.views` augmented views and, with
`features.plain_view`, the unaugmented one. With neither, every epoch augments the decoded
images afresh and runs them through VGG16 (the tutorial's way, many times slower on a CPU).

Writes models/<task>.keras (the whole classifier, raw RGB in), models/<task>.json (preprocessing,
backbone, head, epochs kept, device) and the training history through DVCLive under
metrics/train/<task>/.
"""

import contextlib
import dataclasses
import time

from dvclive import Live

from covidxray.config.params import load_params
from covidxray.data.provenance import manifest_digest, split_digest
from covidxray.data.shards import prepared_images, read_features
from covidxray.data.splitting import read_split
from covidxray.files import write_json
from covidxray.model.backbone import (build_extractor, fingerprint, top_blocks, vgg_backbone,
                                      weights_file)
from covidxray.model.classifier import build_classifier, build_trainer, model_outputs, save_model
from covidxray.model.devices import chief, distributed
from covidxray.model.head import adapt_head, build_head
from covidxray.model.inputs import image_inputs
from covidxray.model.machine import device, resolved_precision
from covidxray.model.training import LiveHistory, fit, fit_on_bank, seed_everything
from covidxray.paths import METRICS, MODELS
from covidxray.runner import cli, task_argument


def fit_per_epoch(extractor, head, recipe, train, val, callbacks):
    """The tutorial's way: augment every epoch, run the whole trainer (no bank)."""
    task, hp = recipe.task, recipe.head
    if hp.normalize:  # standardise with the plain training images' features, as on the bank
        adapt_head(head, [model_outputs(extractor, prepared_images(train), task.batch_size)],
                   hp.variance_floor)
    inputs = image_inputs(train, val, len(task.classes), task.batch_size, recipe.seed,
                          hp.class_weight)
    return {"head": fit(build_trainer(extractor, head, recipe.augment), inputs, task,
                        hp.restore_best, callbacks)}


def training_mode(spec):
    if not spec.stored:
        return "per-epoch augmentation"
    plain = " and the plain view" if spec.plain_view else ""
    return f"bank of {spec.views} augmented view(s){plain}"


def fit_classifier(params, recipe, train, val, spread):
    """Build the classifier and train its head (and blocks); returns it, the backbone's
    fingerprint before training and the epochs kept."""
    task, blocks = recipe.task, params.backbone.trainable_blocks
    backbone = vgg_backbone(params.backbone, params.image_size)
    started_from = fingerprint(backbone)  # before any block is fine-tuned
    extractor = build_extractor(backbone)
    head = build_head(len(task.classes), extractor.output_shape[1:], **task.head.layers())
    classifier = build_classifier(extractor, head)
    print(f"train {task.name}: {len(train)} train / {len(val)} val images, classes"
          f" {list(task.classes)}, backbone {params.backbone.weights} ({blocks} block(s)"
          f" trained), {training_mode(params.features)}, on {device()}, {spread}")
    # read (and so checked) first: DVCLive empties metrics/train/<task>/ when it opens
    features = read_features() if params.features.stored else None
    # with several processes, process 0 alone logs and writes
    log = (Live(str(METRICS / "train" / task.name), dvcyaml=None, save_dvc_exp=False)
           if chief() else contextlib.nullcontext())
    with log as live:
        callbacks = [LiveHistory(live)] if live else []
        if params.features.stored:
            top = top_blocks(backbone, blocks) if blocks else None
            _, kept = fit_on_bank(head, features, train, val, recipe, top, callbacks)
        else:
            kept = fit_per_epoch(extractor, head, recipe, train, val, callbacks)
    return classifier, started_from, kept


def record(params, task, started_from, kept, spread, train, val):
    """models/<task>.json: what the model is, how it was made and from what."""
    backbone, path = params.backbone, weights_file(params.backbone.weights)
    return {
        "task": task.name,
        "classes": list(task.classes),
        "backbone": {
            "weights": backbone.weights,
            "file": path.name if path else None,
            "fingerprint": started_from,
            "precision": resolved_precision(backbone.precision),
            "trainable_blocks": backbone.trainable_blocks,
            "feature_block": backbone.feature_block,
        },
        "preprocess": dataclasses.asdict(params.preprocess),  # which predict applies
        "head": dataclasses.asdict(task.head),
        "bank_views": params.features.views,
        "plain_view": params.features.plain_view,
        "device": device(),
        "distribution": spread,
        "train_images": len(train),
        "val_images": len(val),
        "epochs": task.epochs,
        "epochs_kept": kept,
        "manifest_sha256": manifest_digest(),  # what it was trained on, which evaluate checks
        "split_sha256": split_digest(),
    }


def main(name):
    params = load_params()
    recipe = params.recipe(name)
    seed_everything(recipe.seed)
    train, val = (read_split(part, recipe.task) for part in ("train", "val"))

    started = time.perf_counter()
    with distributed(params.distribution) as spread:
        classifier, started_from, kept = fit_classifier(params, recipe, train, val, spread)
    seconds = time.perf_counter() - started
    if not chief():
        print(f"train {name}: done; process 0 writes the model")
        return
    save_model(classifier, MODELS / f"{name}.keras")
    write_json(MODELS / f"{name}.json",
               record(params, recipe.task, started_from, kept, spread, train, val))
    # the time is printed, not recorded: a retrain with the same params rewrites the same bytes
    fitted = (f"L-BFGS in {kept['lbfgs']} iterations" if "lbfgs" in kept else
              f"{recipe.task.epochs} epochs, kept the weights of epoch(s) {kept}")
    print(f"train {name}: {fitted}, {seconds:.1f} s")


if __name__ == "__main__":
    cli(main)(task_argument("train"))
