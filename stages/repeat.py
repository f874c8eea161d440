"""repeat: split -> train -> evaluate again over several seeds of the split, for mean and spread.

Nine test images a class are few: one split's accuracy moves by a tenth with the luck of the
draw. This stage draws the split `repeat.splits` times, with seeds seed, seed + 1, ..., (so the
first is the pipeline's own split), trains each task's head on the augmentation bank as train
does, scores it on that split's test images as evaluate does, and reports the mean, standard
deviation, min and max of each test metric, per class too. The bank holds the views of every image, so a new
split costs no VGG16 pass. With bank.views = 0 it records that it was skipped.

Writes metrics/repeat.json.
"""

import time

import numpy as np
import pandas as pd

from stages.common import (FEATURES, MANIFEST, METRICS, SPLITS, cli, load_params,
                           read_arrays, task_params, task_rows, whole_number, write_json)
from stages.evaluate import scores
from stages.model import build_head, head_probabilities
from stages.split import split
from stages.train import bank_inputs, fit, seed_everything

METRIC_KEYS = ("accuracy", "auc", "loss")
CLASS_KEYS = ("precision", "recall", "f1")


def task_scores(features, parts, spec, seed):
    """Train one task's head on one split's training images; its scores on that split's test."""
    classes = spec["classes"]
    n = len(classes)
    train, val, test = (task_rows(parts[name], classes, f"split seed {seed}, {name}")
                        for name in SPLITS)
    seed_everything(seed)
    head = build_head(n, features["plain"].shape[1:])
    fit(head, bank_inputs(features, train, val, n, spec["batch_size"], seed), spec, n, verbose=0)
    probs = head_probabilities(head, features["plain"][test["image"].to_numpy()],
                               spec["batch_size"])
    return scores(test["label"].to_numpy(), probs, classes)


def spread(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1
            else 0.0, "min": float(values.min()), "max": float(values.max()),
            "values": values.round(6).tolist()}


def summary(results, splits, seeds):
    """Spread of each test metric of one task over the splits, per class too."""
    classes = results[0]["per_class"]
    return {"splits": splits, "seeds": seeds,
            **{key: spread([r[key] for r in results]) for key in METRIC_KEYS},
            "per_class": {cls: {key: spread([r["per_class"][cls][key] for r in results])
                                for key in CLASS_KEYS} for cls in classes}}


def main():
    params = load_params()
    splits = whole_number(params["repeat"]["splits"], "repeat.splits", 1)
    if not params["bank"]["views"]:
        # a valid config, so the pipeline goes on; the skip is recorded where results would be
        reason = ("skipped: repeat needs the augmentation bank (bank.views > 0); per-epoch"
                  " augmentation would run VGG16 for every split and epoch")
        write_json(METRICS / "repeat.json", {task: {"skipped": reason} for task in params["tasks"]})
        print(f"repeat: {reason}")
        return
    manifest, features = pd.read_csv(MANIFEST), read_arrays(FEATURES)
    seeds = [params["seed"] + i for i in range(splits)]
    runs = {task: [] for task in params["tasks"]}
    started = time.perf_counter()
    for i, seed in enumerate(seeds, start=1):
        parts = split(manifest, params["split"]["test_per_class"],
                      params["split"]["val_fraction"], seed)
        for task, results in runs.items():
            results.append(task_scores(features, parts, task_params(params, task), seed))
        accuracies = ", ".join(f"{task} {results[-1]['accuracy']:.2f}"
                               for task, results in runs.items())
        print(f"repeat: split {i}/{splits} (seed {seed}): test accuracy {accuracies}")
    write_json(METRICS / "repeat.json", {task: summary(results, splits, seeds)
                                         for task, results in runs.items()})
    for task, results in runs.items():
        accuracy = spread([r["accuracy"] for r in results])
        print(f"repeat: {task} test accuracy {accuracy['mean']:.3f} ± {accuracy['sd']:.3f}"
              f" over {splits} splits")
    print(f"repeat: {splits} splits in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    cli(main)()
