"""holdout: leave one hospital out. Does the task find COVID-19 in a hospital it never saw?

For each seed of `holdout.splits` (seed, seed + 1, ..., as repeat draws them) and each COVID-19
source of `holdout.sources`, the task's head trains on the bank without any image of that
source, then is scored on it (covidxray/holdout.py): recall on the source's validation patients
(for choosing) and on its other patients (the test), false alarms on the split's adults without
COVID-19, and, for the source of `holdout.within_source`'s images, the AUC between its COVID-19
images and its own adults without COVID-19. The learning curve trains again on
`holdout.fractions` of the training COVID-19 patients, without the source and with every source.

Writes metrics/detail/holdout.json: per left-out source and for every source together, the
spread over the splits of each score with its interval; the verdict against `holdout.targets`;
the curve. And metrics/holdout.json, the verdict's means (covidxray/headline.py).
"""

import dataclasses
import time

import pandas as pd

from covidxray.backbone import trainable_top
from covidxray.stored import external_features, external_rows
from covidxray.cli import PipelineError, cli
from covidxray.distribution import chief, distributed
from covidxray.files import write_json
from covidxray.headline import holdout_headline
from covidxray.holdout import (EVERY, covid_share, curve_points, holdout_rows, run_scores,
                               summary, verdict, verdict_lines, within_source_rows)
from covidxray.model import head_probabilities
from covidxray.params import load_params
from covidxray.paths import DETAIL, MANIFEST, METRICS
from covidxray.shards import read_features
from covidxray.splitting import draw_splits, split_seeds
from covidxray.training import bank_probabilities, head_on_bank


def within_source(name, sources):
    """{left-out source: (features, rows)} of the external set's adults without COVID-19 from
    that source; {} when no set is given."""
    if not name:
        return {}
    rows = external_rows(name)  # numbered 0.. as the images
    features = external_features(name)
    found = {}
    for source in set(rows["source"]) & set(sources):
        negatives = within_source_rows(rows, source)
        found[source] = (features[negatives.index.to_numpy()], negatives)
    if not found:
        raise PipelineError(f"params.yaml: holdout.within_source set {name!r} holds images of"
                            f" none of holdout.sources ({', '.join(sources)})")
    return found


def run_split(bank, parts, spec, recipe, seed, top, within):
    """Every run of one split: {(trained on, fraction): scores}, trained on being a left-out
    source (all but it trained) or EVERY."""
    classes, batch = recipe.task.classes, recipe.task.batch_size
    start = top.get_weights() if top is not None else None
    results = {}
    for fraction in spec.fractions:
        for left_out in [*spec.sources, None]:
            rows = holdout_rows(parts, recipe.task, left_out)
            rows["train"] = covid_share(rows["train"], fraction, seed)
            if top is not None:
                top.set_weights(start)  # every run fine-tunes from the same weights
            model = head_on_bank(bank, rows["train"], rows["val"], recipe, seed, top)
            negatives = None
            if left_out in within:
                features, negative_rows = within[left_out]
                negatives = (head_probabilities(model, features, batch), negative_rows)
            results[(left_out or EVERY, fraction)] = run_scores(
                lambda r, model=model: bank_probabilities(model, bank["plain"], r, recipe), rows,
                classes, negatives)
    return results


def run_splits(params, manifest, bank, within):
    spec, recipe = params.holdout, params.recipe(params.holdout.task)
    seeds = split_seeds(params.seed, spec.splits)
    top = trainable_top(params.backbone, params.image_size)
    runs = {}
    drawn = draw_splits(manifest, params.split, seeds)
    for i, (seed, parts) in enumerate(zip(seeds, drawn), start=1):
        for key, result in run_split(bank, parts, spec, recipe, seed, top, within).items():
            runs.setdefault(key, []).append(result)
        line = ", ".join(f"{s} recall {runs[(s, 1.0)][-1]['val']['recall']:.2f}"
                         for s in spec.sources)
        print(f"holdout: split {i}/{len(seeds)} (seed {seed}): left out, validation {line}")
    return seeds, runs


def report(spec, seeds, runs):
    left_out = {source: summary(runs[(source, 1.0)]) for source in spec.sources}
    result = {"task": spec.task, "sources": list(spec.sources), "splits": spec.splits,
              "seeds": seeds, "targets": dataclasses.asdict(spec.targets), "left_out": left_out,
              "every_source": summary(runs[(EVERY, 1.0)]),
              "verdict": verdict(left_out, spec.targets), "curve": curve_points(runs)}
    return {**result, "summary": verdict_lines(result)}


def main():
    params = load_params()
    spec = params.holdout
    if not params.bank.stored:
        raise PipelineError("params.yaml: holdout needs the bank (bank.views > 0 or"
                            " bank.plain_view)")
    manifest, bank = pd.read_csv(MANIFEST), read_features()
    started = time.perf_counter()
    with distributed(params.distribution) as where:  # models are made inside, as it needs
        within = within_source(spec.within_source, spec.sources)
        print(f"holdout: {spec.splits} splits x {len(spec.sources)} sources left out,"
              f" fractions {list(spec.fractions)}, training on {where}")
        seeds, runs = run_splits(params, manifest, bank, within)
    if not chief():  # several processes trained together; process 0 writes
        return
    result = report(spec, seeds, runs)
    write_json(DETAIL / "holdout.json", result)
    write_json(METRICS / "holdout.json", holdout_headline(result["verdict"]))
    for line in result["summary"]:
        print(f"holdout: {line}")
    print(f"holdout: {len(runs) * spec.splits} models in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    cli(main)()
