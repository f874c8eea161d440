"""holdout: leave one place out. Does the task find COVID-19 in a hospital it never saw?

For each seed of `holdout.splits` (seed, seed + 1, ..., as repeat draws them) and each place, a
COVID-19 collection of `holdout.sources` or a region of `holdout.regions`
(covidxray/evaluation/places.py), the task's head trains on the bank without any image of that
place, then is scored on it (covidxray/evaluation/holdout.py): recall on the place's validation
patients (for choosing) and on its other patients (the test), false alarms on the split's adults
without COVID-19, and the AUC between its COVID-19 images and its own adults without COVID-19 (of
`holdout.within_source`'s set and of the manifest). Two learning curves: the collections again on
`holdout.fractions` of the training COVID-19 patients, without the collection and with every one;
and each region scored after training on 0, 1, ... of the other regions.

Writes metrics/detail/holdout.json: per left-out place and for every source together, the
spread over the splits of each score with its interval; the verdict against `holdout.targets`;
the curves. And metrics/holdout.json, the verdict's means (covidxray/evaluation/headline.py).
"""

import dataclasses
import time

import numpy as np
import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.external import external_features, external_rows
from covidxray.data.shards import read_features
from covidxray.data.splitting import draw_splits, split_seeds
from covidxray.errors import PipelineError
from covidxray.evaluation.headline import holdout_headline
from covidxray.evaluation.holdout import (EVERY, covid_share, curve_points, rows_without_place,
                                          run_scores, place_spread, verdict, verdict_lines,
                                          within_source_rows)
from covidxray.evaluation.places import (collections, region_curve, regions, trained_regions,
                                         training_sites)
from covidxray.files import write_json
from covidxray.model.backbone import trainable_top
from covidxray.model.classifier import head_probabilities
from covidxray.model.devices import chief, distributed
from covidxray.model.training import bank_probabilities, head_on_bank
from covidxray.paths import DETAIL, MANIFEST, METRICS
from covidxray.runner import cli


def within_source(name, places, manifest):
    """{place name: (external features, external rows, manifest rows)}: each place's adults
    without COVID-19, of the external set `name` (none when not given) and of the manifest
    (its rows with `image`, their index in the bank)."""
    rows = external_rows(name) if name else None  # numbered 0.. as the images
    features = external_features(name) if name else None
    found = {}
    for place in places:
        external = within_source_rows(rows, place) if name else manifest.iloc[:0]
        own = within_source_rows(manifest, place)
        if len(external) or len(own):
            found[place.name] = (None if features is None else
                                 features[external.index.to_numpy()], external, own)
    if name and not any(len(external) for _, external, _ in found.values()):
        raise PipelineError(f"params.yaml: holdout.within_source set {name!r} holds no adults"
                            " without COVID-19 of any left-out place")
    return found


def scored_run(bank, rows, recipe, seed, top, start, place, within):
    """Train without `place` (None: with every place) and score it."""
    if top is not None:
        top.set_weights(start)  # every run fine-tunes from the same weights
    model = head_on_bank(bank, rows["train"], rows["val"], recipe, seed, top)

    def predict(r):
        return bank_probabilities(model, bank["plain"], r, recipe)

    negatives = None
    if place is not None and place.name in within:
        features, external, own = within[place.name]
        probs = [head_probabilities(model, features, recipe.task.batch_size)] if len(external) \
            else []
        probs += [predict(own)] if len(own) else []
        negatives = (np.concatenate(probs), pd.concat([external, own]))
    result = run_scores(predict, rows, recipe.task.classes, negatives)
    return {**result, "train_sites": training_sites(rows["train"])}


def run_split(bank, parts, spec, recipe, seed, top, within):
    """Every run of one split: {(trained on, fraction): scores}, trained on being a left-out
    place (all but it trained) or EVERY; and {(region, count): scores} of the region curve."""
    start = top.get_weights() if top is not None else None
    task, results, curve = recipe.task, {}, {}
    for fraction in spec.fractions:  # the collections' curve by images
        for place in [*collections(spec), None]:
            rows = rows_without_place(parts, task, place)
            rows["train"] = covid_share(rows["train"], fraction, seed)
            results[(place.name if place else EVERY, fraction)] = scored_run(
                bank, rows, recipe, seed, top, start, place, within)
    areas = regions(spec)
    for place in areas:
        rows = rows_without_place(parts, task, place)
        results[(place.name, 1.0)] = scored_run(bank, rows, recipe, seed, top, start, place,
                                                within)
        for count in range(len(areas) if spec.regions.curve else 0):  # 0, 1, ... others
            fewer = {**rows, "train": trained_regions(rows["train"], place, areas, count, seed),
                     "val": trained_regions(rows["val"], place, areas, count, seed)}
            curve[(place.name, count)] = [scored_run(bank, fewer, recipe, seed, top, start,
                                                     None, {})]
    return results, curve


def run_splits(params, manifest, bank, within):
    spec, recipe = params.holdout, params.recipe(params.holdout.task)
    seeds = split_seeds(params.seed, spec.splits)
    top = trainable_top(params.backbone, params.image_size)
    runs, curve = {}, {}
    drawn = draw_splits(manifest, params.split, seeds)
    names = [place.name for place in collections(spec) + regions(spec)]
    for i, (seed, parts) in enumerate(zip(seeds, drawn), start=1):
        results, by_regions = run_split(bank, parts, spec, recipe, seed, top, within)
        for key, result in results.items():
            runs.setdefault(key, []).append(result)
        for key, result in by_regions.items():
            curve.setdefault(key, []).extend(result)
        line = ", ".join(f"{name} {number(runs[(name, 1.0)][-1]['val']['recall'])}"
                         for name in names)
        print(f"holdout: split {i}/{len(seeds)} (seed {seed}): left out, validation recall"
              f" {line}")
    return seeds, runs, curve


def number(share):
    return "n/a" if share is None else f"{share:.2f}"


def report(spec, seeds, runs, curve):
    areas = regions(spec)
    left_out = {source: place_spread(runs[(source, 1.0)]) for source in spec.sources}
    left_out.update({place.name: {**place_spread(runs[(place.name, 1.0)]),
                                  "collection": place.source} for place in areas})
    groups = {"collections": list(spec.sources), "regions": [place.name for place in areas]}
    result = {"task": spec.task, "sources": list(spec.sources), "regions": groups["regions"],
              "region_source": spec.regions.source if spec.regions else None,
              "splits": spec.splits, "seeds": seeds, "targets": dataclasses.asdict(spec.targets),
              "left_out": left_out, "every_source": place_spread(runs[(EVERY, 1.0)]),
              "verdict": verdict(left_out, spec.targets, groups),
              "curve": curve_points({k: v for k, v in runs.items()
                                     if k[0] in (*spec.sources, EVERY)}),
              "curve_by_regions": region_curve(curve)}
    return {**result, "summary": verdict_lines(result)}


def main():
    params = load_params()
    spec = params.holdout
    if not params.features.stored:
        raise PipelineError("params.yaml: holdout needs the bank (features.views > 0 or"
                            " features.plain_view)")
    manifest, bank = pd.read_csv(MANIFEST, keep_default_na=False), read_features()
    started = time.perf_counter()
    with distributed(params.distribution) as where:  # models are made inside, as it needs
        within = within_source(spec.within_source, collections(spec) + regions(spec),
                               manifest.reset_index(names="image"))
        print(f"holdout: {spec.splits} splits x {len(spec.sources)} collections and"
              f" {len(regions(spec))} regions left out, fractions {list(spec.fractions)},"
              f" training on {where}")
        seeds, runs, curve = run_splits(params, manifest, bank, within)
    if not chief():  # several processes trained together; process 0 writes
        return
    result = report(spec, seeds, runs, curve)
    write_json(DETAIL / "holdout.json", result)
    write_json(METRICS / "holdout.json", holdout_headline(result["verdict"]))
    for line in result["summary"]:
        print(f"holdout: {line}")
    models = (len(runs) + len(curve)) * spec.splits
    print(f"holdout: {models} models in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    cli(main)()
