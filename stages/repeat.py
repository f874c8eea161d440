"""repeat: split -> train -> score again over several seeds of the split, for mean and spread.

Nine test images a class are few: one split's accuracy moves by a tenth with the luck of the draw.
This stage draws the split `repeat.splits` times, with seeds seed, seed + 1, ..., (so the first is
the pipeline's own split), trains each task's head on the augmentation bank exactly as train does,
and scores it on that split's validation images (what candidates are chosen by) and test images.
Beside each head it fits the reference model, a logistic regression on the same features and split
(covidxray/evaluation/scoring.py), which a head has to beat. The bank holds the views of every
image, so a new split costs no VGG16 pass. With bank.views = 0 it records a skip.

Writes metrics/detail/repeat.json: per task, for the head and the reference, the mean, sd, min
and max of each validation and test metric over the splits, per class too.
"""

import time

import numpy as np
import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.shards import read_features
from covidxray.data.splitting import draw_splits, split_seeds, task_rows
from covidxray.evaluation.scoring import (by_source, pooled, reference_model, scores, spread,
                                          summary, val_scores)
from covidxray.files import write_json
from covidxray.model.backbone import trainable_top
from covidxray.model.batching import batch_slices
from covidxray.model.classifier import model_outputs
from covidxray.model.devices import chief, distributed
from covidxray.model.training import bank_probabilities, head_on_bank
from covidxray.paths import DETAIL, MANIFEST
from covidxray.runner import cli


def split_scores(predict, parts, task, seed):
    """Validation and test scores of a model (rows -> class probabilities) on one split of a
    task."""
    classes = task.classes
    val, test = (task_rows(parts[name], task, f"split seed {seed}, {name}")
                 for name in ("val", "test"))
    val_probs, test_probs = predict(val), predict(test)
    # per source on validation too: mitigations of the source shortcut are chosen there
    return {"val": {**val_scores(val["label"].to_numpy(), val_probs, classes),
                    "by_source": by_source(val, val_probs, classes)},
            "test": {**scores(test["label"].to_numpy(), test_probs, classes),
                     "by_source": by_source(test, test_probs, classes)}}


def head_scores(bank, parts, recipe, seed, top):
    """Train one task's head on one split's training images, as train does; its scores."""
    train, val = (task_rows(parts[name], recipe.task, f"split seed {seed}, {name}")
                  for name in ("train", "val"))
    model = head_on_bank(bank, train, val, recipe, seed, top)
    return split_scores(lambda rows: bank_probabilities(model, bank["plain"], rows, recipe),
                        parts, recipe.task, seed)


def reference_scores(plain, parts, task, seed):
    """The logistic-regression reference, trained on one split's (pooled) plain features; its
    scores."""
    train = task_rows(parts["train"], task, f"split seed {seed}, train")
    model = reference_model(plain[train["image"].to_numpy()], train["label"].to_numpy())
    return split_scores(lambda rows: model.predict_proba(plain[rows["image"].to_numpy()]),
                        parts, task, seed)


def skip(params):
    # a valid config, so the pipeline goes on; the skip is recorded where results would be
    reason = ("skipped: repeat needs the bank (bank.views > 0 or bank.plain_view); per-epoch"
              " augmentation would run VGG16 for every split and epoch")
    write_json(DETAIL / "repeat.json", {task: {"skipped": reason} for task in params.tasks})
    print(f"repeat: {reason}")


def top_and_pooled(params, bank):
    """The trainable top blocks (None when frozen) and every image's average-pooled block5
    features of the plain view, which the reference model reads: 2 KiB an image, made a shard's
    rows at a time."""
    top = trainable_top(params.backbone, params.image_size)
    plain, batch = bank["plain"], params.shard_size
    chunks = (plain[rows].astype(np.float32) for rows in batch_slices(len(plain), batch))
    return top, np.concatenate([pooled(chunk if top is None else model_outputs(top, chunk, batch))
                                for chunk in chunks])


def run_splits(params, recipes, manifest, bank, seeds):
    """Each task's head and reference scores on each seed's split: {task: {model: [scores]}}."""
    top, plain = top_and_pooled(params, bank)
    start = top.get_weights() if top is not None else None
    runs = {task: {"head": [], "reference": []} for task in recipes}
    drawn = draw_splits(manifest, params.split, seeds)
    for i, (seed, parts) in enumerate(zip(seeds, drawn), start=1):
        for task, recipe in recipes.items():
            if top is not None:
                top.set_weights(start)  # every split fine-tunes from the same weights
            runs[task]["head"].append(head_scores(bank, parts, recipe, seed, top))
            runs[task]["reference"].append(
                reference_scores(plain, parts, recipe.task, seed))
        line = ", ".join(f"{task} {r['head'][-1]['val']['accuracy']:.2f}"
                         f" (reference {r['reference'][-1]['val']['accuracy']:.2f})"
                         for task, r in runs.items())
        print(f"repeat: split {i}/{len(seeds)} (seed {seed}): val accuracy {line}")
    return runs


def main():
    params = load_params()
    splits = params.repeat_splits
    if not params.bank.stored:
        return skip(params)
    recipes = {task: params.recipe(task) for task in params.tasks}
    manifest, bank = pd.read_csv(MANIFEST), read_features()
    seeds = split_seeds(params.seed, splits)
    started = time.perf_counter()
    with distributed(params.distribution) as where:  # models are made inside, as it needs
        print(f"repeat: {splits} splits, training on {where}")
        runs = run_splits(params, recipes, manifest, bank, seeds)
    if not chief():  # several processes trained together; process 0 writes
        return
    write_json(DETAIL / "repeat.json", {
        task: {"splits": splits, "seeds": seeds,
               **{model: summary(results) for model, results in r.items()}}
        for task, r in runs.items()})
    for task, r in runs.items():
        for model, results in r.items():
            val = spread([x["val"]["accuracy"] for x in results])
            print(f"repeat: {task} {model} val accuracy {val['mean']:.3f} ± {val['sd']:.3f}"
                  f" over {splits} splits")
    print(f"repeat: {splits} splits in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    cli(main)()
