"""How many augmented views the bank needs: test accuracy against views, over training seeds.

For each seed, one bank of the largest number of views is computed (the features stage's
code); each smaller bank is its first views. The head of each task is then trained on it (the
train stage's code) and scored on the test split. Views equal to a task's epochs is per-epoch
augmentation exactly (see stages/features.py). The split stays the one in data/split.

    python -m bench.bank_sweep --views 1 5 10 20 --seeds 1 2 3
    python -m bench.bank_sweep --views 100 --tasks three four --out bench/bank_sweep_100.csv

Writes bench/bank_sweep.csv and prints mean and spread per task and number of views.
"""

import argparse
import dataclasses
import time

import keras
import numpy as np
import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.shards import prepared_images
from covidxray.data.splitting import read_split
from covidxray.model.augment import augmenter
from covidxray.model.classifier import head_probabilities
from covidxray.model.features import (augmented_views, bank_batch, build_features_model,
                                      plain_features)
from covidxray.model.head import adapt_head, build_head
from covidxray.model.inputs import BankBatches, targets
from covidxray.model.training import fit, seed_everything


def head_accuracy(task, seed, bank, train, val_features, val, test_features, test):
    """Train one task's head on a bank; its val and test accuracy."""
    n = len(task.classes)
    seed_everything(seed)
    head = build_head(n, bank.shape[2:], **task.head.layers())
    adapt_head(head, bank)
    fit(head, {"x": BankBatches(bank, np.arange(len(train)), targets(train, n),
                                task.batch_size, seed)}, task, verbose=0)
    return {split: float((head_probabilities(head, x, task.batch_size).argmax(axis=1)
                          == rows["label"]).mean())
            for split, x, rows in (("val", val_features, val), ("test", test_features, test))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--tasks", nargs="+", help="default: every task in params.yaml")
    parser.add_argument("--out", default="bench/bank_sweep.csv")
    args = parser.parse_args()
    params = load_params()
    extractor = build_features_model(params.backbone, params.image_size)
    batch = bank_batch(params.features, params.backbone, extractor)
    tasks = params.tasks.values()
    every_task = dataclasses.replace(
        next(iter(tasks)), classes=tuple(sorted({c for t in tasks for c in t.classes})),
        sources=tuple(sorted({s for t in tasks for s in t.sources})))
    split = {name: read_split(name, every_task) for name in ("train", "val", "test")}
    features = {name: plain_features(extractor, prepared_images(split[name]), batch)
                for name in ("val", "test")}
    rows = []
    for seed in args.seeds:
        keras.utils.set_random_seed(seed)
        started = time.perf_counter()
        bank = augmented_views(extractor, augmenter(params.augment),
                               prepared_images(split["train"]), max(args.views), batch)
        bank_seconds = time.perf_counter() - started
        for task in args.tasks or params.tasks:
            spec = params.task(task)
            part = {name: read_split(name, spec) for name in split}
            pick = {name: split[name]["image"].searchsorted(part[name]["image"]) for name in split}
            for views in args.views:
                started = time.perf_counter()
                accuracy = head_accuracy(spec, seed,
                                         bank[:views, pick["train"]], part["train"],
                                         features["val"][pick["val"]], part["val"],
                                         features["test"][pick["test"]], part["test"])
                rows.append({"seed": seed, "task": task, "views": views, **accuracy,
                             "head_seconds": time.perf_counter() - started,
                             "bank_seconds_per_view": bank_seconds / max(args.views)})
                print(rows[-1], flush=True)
        table = pd.DataFrame(rows)
        table.to_csv(args.out, index=False)  # after every seed, so a cut-short sweep keeps them
    print(table.groupby(["task", "views"])[["test", "val"]].agg(["mean", "std"]).round(3))


if __name__ == "__main__":
    main()
