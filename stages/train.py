"""train <task>: fit the head (and, with backbone.trainable_blocks, VGG16's last blocks).

The head trains on the bank of the features stage: each epoch shows it one stored view of every
training image, cycling through `bank.views` augmented views and, with `bank.plain_view`, the
unaugmented one. With neither, every epoch augments the decoded images afresh and runs them
through VGG16 (the tutorial's way, many times slower on a CPU). Writes models/<task>.keras (the whole classifier, raw RGB in),
models/<task>.json (preprocessing, backbone, head, epochs kept, device) and the training history
through DVCLive under metrics/train/<task>/.
"""

import contextlib
import time

from dvclive import Live

from covidxray.common import (HEAD_LAYERS, METRICS, MODELS, cli, load_params, manifest_digest,
                              preprocess_params, read_recipe, read_split, split_digest,
                              task_argument, write_json)
from covidxray.distribution import chief, distributed, distribution_param
from covidxray.machine import device, resolved_precision
from covidxray.model import (adapt_head, build_classifier, build_extractor, build_head,
                             build_trainer, fingerprint, save_model, top_blocks, vgg_backbone,
                             weights_file)
from covidxray.shards import prepared_images, read_features
from covidxray.training import (LiveHistory, fit, fit_on_bank, image_inputs,
                                seed_everything, through)


def fit_per_epoch(extractor, head, recipe, train, val, callbacks):
    """The tutorial's way: augment every epoch, run the whole trainer (no bank)."""
    spec, hp = recipe["task"], recipe["head"]
    n = len(spec["classes"])
    if hp["normalize"]:  # standardise with the plain training images' features, as on the bank
        adapt_head(head, [through(extractor, prepared_images(train), spec["batch_size"])],
                   hp["variance_floor"])
    inputs = image_inputs(train, val, n, spec["batch_size"], recipe["seed"], hp["class_weight"])
    return {"head": fit(build_trainer(extractor, head, recipe["augment"]), inputs, spec, n,
                        hp["restore_best"], callbacks)}


def fit_classifier(params, recipe, task, train, val, spread):
    """Build the classifier and train its head (and blocks); returns it, the backbone's
    fingerprint before training and the epochs kept."""
    classes, blocks = recipe["task"]["classes"], recipe["fine_tune"]["blocks"]
    weights = params["backbone"]["weights"]
    backbone = vgg_backbone(params["backbone"], params["image_size"])
    started_from = fingerprint(backbone)  # before any block is fine-tuned
    extractor = build_extractor(backbone)
    head = build_head(len(classes), extractor.output_shape[1:],
                      **{key: recipe["head"][key] for key in HEAD_LAYERS})
    classifier = build_classifier(extractor, head)
    mode = (f"bank of {recipe['views']} augmented view(s)"
            f"{' and the plain view' if recipe['plain_view'] else ''}" if recipe["bank"]
            else "per-epoch augmentation")
    print(f"train {task}: {len(train)} train / {len(val)} val images, classes {classes},"
          f" backbone {weights} ({blocks} block(s) trained), {mode}, on {device()}, {spread}")
    # with several processes, process 0 alone logs and writes
    log = (Live(str(METRICS / "train" / task), dvcyaml=None, save_dvc_exp=False) if chief()
           else contextlib.nullcontext())
    with log as live:
        callbacks = [LiveHistory(live)] if live else []
        if recipe["bank"]:
            top = top_blocks(backbone, blocks) if blocks else None
            _, kept = fit_on_bank(head, read_features(), train, val, recipe, top, callbacks)
        else:
            kept = fit_per_epoch(extractor, head, recipe, train, val, callbacks)
    return classifier, started_from, kept


def main(task):
    params = load_params()
    recipe = read_recipe(params, task)
    classes, blocks = recipe["task"]["classes"], recipe["fine_tune"]["blocks"]
    setting, preprocess = distribution_param(params), preprocess_params(params)
    seed_everything(recipe["seed"])
    train, val = (read_split(name, recipe["task"]) for name in ("train", "val"))

    started = time.perf_counter()
    with distributed(setting) as spread:
        classifier, started_from, kept = fit_classifier(params, recipe, task, train, val, spread)
    seconds = time.perf_counter() - started
    if not chief():
        print(f"train {task}: done; process 0 writes the model")
        return
    save_model(classifier, MODELS / f"{task}.keras")
    weights = params["backbone"]["weights"]
    path = weights_file(weights)
    write_json(MODELS / f"{task}.json", {
        "task": task,
        "classes": classes,
        "backbone": {
            "weights": weights,
            "file": path.name if path else None,
            "fingerprint": started_from,
            "precision": resolved_precision(params["backbone"]["precision"]),
            "trainable_blocks": blocks,
            "feature_block": recipe["fine_tune"]["feature_block"],
        },
        "preprocess": preprocess,  # which predict applies to new images
        "head": recipe["head"],
        "bank_views": recipe["views"],
        "plain_view": recipe["plain_view"],
        "device": device(),
        "distribution": spread,
        "train_images": len(train),
        "val_images": len(val),
        "epochs": recipe["task"]["epochs"],
        "epochs_kept": kept,
        "manifest_sha256": manifest_digest(),  # what it was trained on, which evaluate checks
        "split_sha256": split_digest(),
    })
    # the time is printed, not recorded: a retrain with the same params rewrites the same bytes
    print(f"train {task}: {recipe['task']['epochs']} epochs in {seconds:.1f} s, kept the"
          f" weights of epoch(s) {kept}")


if __name__ == "__main__":
    cli(main)(task_argument("train"))
