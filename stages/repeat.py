"""repeat: split -> train -> score again over several seeds of the split, for mean and spread.

Nine test images a class are few: one split's accuracy moves by a tenth with the luck of the draw.
This stage draws the split `repeat.splits` times, with seeds seed, seed + 1, ..., (so the first is
the pipeline's own split), trains each task's head on the augmentation bank exactly as train does,
and scores it on that split's validation images (what candidates are chosen by) and test images.
Beside each head it fits the reference model, a logistic regression on the same features and split
(covidxray/evaluation/scoring.py), which a head has to beat. The bank holds the views of every
image, so a new split costs no VGG16 pass. With features.views = 0 it records a skip.

Writes metrics/detail/repeat.json: per task, for the head and the reference, the mean, sd, min
and max of each validation and test metric over the splits, per class too.
"""

import time

import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.shards import read_features
from covidxray.data.splitting import split_seeds
from covidxray.evaluation.repeated import run_splits
from covidxray.evaluation.scoring import spread, split_spread
from covidxray.files import write_json
from covidxray.model.devices import chief, distributed
from covidxray.paths import DETAIL, MANIFEST
from covidxray.runner import cli








def skip(params):
    # a valid config, so the pipeline goes on; the skip is recorded where results would be
    reason = ("skipped: repeat needs the bank (features.views > 0 or features.plain_view);"
              " per-epoch augmentation would run VGG16 for every split and epoch")
    write_json(DETAIL / "repeat.json", {task: {"skipped": reason} for task in params.tasks})
    print(f"repeat: {reason}")






def main():
    params = load_params()
    splits = params.repeat_splits
    if not params.features.stored:
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
               **{model: split_spread(results) for model, results in r.items()}}
        for task, r in runs.items()})
    for task, r in runs.items():
        for model, results in r.items():
            val = spread([x["val"]["accuracy"] for x in results])
            print(f"repeat: {task} {model} val accuracy {val['mean']:.3f} ± {val['sd']:.3f}"
                  f" over {splits} splits")
    print(f"repeat: {splits} splits in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    cli(main)()
