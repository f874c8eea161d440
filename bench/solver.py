"""How the linear head is fitted (`head.solver`), chosen on validation: Keras's fit by epochs
(adam, the head before issue 31) against L-BFGS's optimum at several `head.l2`.

    python -m bench.solver [--l2 0.01 0.1 1] [--adam [L2]]

Needs the workspace's data/features and data/split (`dvc repro features split`). For each
candidate, every task's head is trained on `repeat`'s splits and scored on their validation
images, and `holdout.task`'s head on `holdout`'s left-out sources, scored on each left-out
source's validation patients (recall) and the validation adults without COVID-19 (false alarms).
Only validation scores: the test split is not read. Markdown table on stdout, with the seconds a
head took on this machine; docs/model-selection.md says how the default was chosen from it.
"""

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.shards import read_features
from covidxray.data.splitting import draw_splits, split_seeds, task_rows
from covidxray.evaluation.holdout import rows_without_place, run_scores
from covidxray.evaluation.scoring import spread, val_scores
from covidxray.model.training import bank_probabilities, head_on_bank
from covidxray.paths import MANIFEST
from covidxray.runner import cli


def with_head(recipe, **changes):
    task = recipe.task
    return dataclasses.replace(recipe, task=dataclasses.replace(
        task, head=dataclasses.replace(task.head, **changes)))


def repeat_scores(bank, drawn, seeds, recipe):
    """Validation accuracy and loss of the task's head over the splits."""
    found = []
    for seed, parts in zip(seeds, drawn):
        train, val = (task_rows(parts[name], recipe.task, name) for name in ("train", "val"))
        model = head_on_bank(bank, train, val, recipe, seed)
        found.append(val_scores(val["label"].to_numpy(),
                                bank_probabilities(model, bank["plain"], val, recipe),
                                recipe.task.classes))
    return {key: spread([f[key] for f in found]) for key in ("accuracy", "loss")}


def holdout_scores(bank, drawn, seeds, recipe, sources):
    """Mean validation recall of each left-out source and false alarms, over the splits."""
    recall, alarm = [], []
    for seed, parts in zip(seeds, drawn):
        for source in sources:
            rows = rows_without_place(parts, recipe.task, source)
            model = head_on_bank(bank, rows["train"], rows["val"], recipe, seed)
            found = run_scores(lambda r, m=model: bank_probabilities(m, bank["plain"], r, recipe),
                               rows, recipe.task.classes)["val"]
            recall.append(found["recall"])
            alarm.append(found["false_alarm"])
    return np.mean(recall), np.mean(alarm)


def candidates(params, l2s, adam_l2):
    """{name: {task: recipe}}: Keras's fit at `adam_l2` (None: not run), L-BFGS at each l2."""
    base = {name: params.recipe(name) for name in params.tasks}
    adam = {f"adam, l2 {adam_l2} (Keras's fit)": {
        n: with_head(r, solver="adam", l2=adam_l2) for n, r in base.items()}}
    return {**(adam if adam_l2 is not None else {}),
            **{f"lbfgs, l2 {l2}": {n: with_head(r, solver="lbfgs", l2=l2)
                                   for n, r in base.items()} for l2 in l2s}}


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.solver")
    parser.add_argument("--l2", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--adam", type=float, nargs="?", const=0.01, metavar="L2",
                        help="Keras's fit too, at this l2 (0.01, its default before L-BFGS):"
                             " about 9 s a head")
    args = parser.parse_args()
    params = load_params()
    bank, manifest = read_features(), pd.read_csv(MANIFEST)
    seeds = split_seeds(params.seed, params.repeat_splits)
    drawn = draw_splits(manifest, params.split, seeds)
    spec = params.holdout
    print("| candidate | " + " | ".join(params.tasks) + " | mean val accuracy | mean val loss"
          f" | {spec.task} left out: val recall | val false alarms | recall less false alarms"
          " | s a head |")
    print("|---" * (len(params.tasks) + 7) + "|")
    for name, recipes in candidates(params, args.l2, args.adam).items():
        started = time.perf_counter()
        found = {task: repeat_scores(bank, drawn, seeds, r) for task, r in recipes.items()}
        recall, alarm = holdout_scores(bank, drawn, seeds, recipes[spec.task], spec.sources)
        heads = len(seeds) * (len(recipes) + len(spec.sources))
        cells = [f"{f['accuracy']['mean']:.3f} ± {f['accuracy']['sd']:.3f}"
                 for f in found.values()]
        mean_acc = np.mean([f["accuracy"]["mean"] for f in found.values()])
        mean_loss = np.mean([f["loss"]["mean"] for f in found.values()])
        print(f"| {name} | " + " | ".join(cells) + f" | {mean_acc:.3f} | {mean_loss:.3f} |"
              f" {recall:.3f} | {alarm:.3f} | {recall - alarm:.3f} |"
              f" {(time.perf_counter() - started) / heads:.2f} |",
              flush=True)


if __name__ == "__main__":
    cli(main)()
