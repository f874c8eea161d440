"""Leave one place out: a task trained without one COVID-19 collection or region, scored on it.

Every COVID-19 image of a source shares whatever marks the source (views, processing, borders,
labels). A model trained and tested on one such source can score well by seeing the source, not the
disease; only a place it never saw tells the two apart. So, for each place in turn (a collection, or
a region inside one: covidxray/evaluation/places.py), the task trains on one split without any image
of it, and is scored on:

- recall: the share of that source's COVID-19 images called COVID-19. Validation uses the
  source's validation patients (what candidates are chosen by); the test uses its other patients
  (its train and test sides), which neither training nor the choice ever saw;
- false alarms: the share of the split's adults without COVID-19 called COVID-19 (validation
  or test side);
- within the place, where it has adults without COVID-19 of its own (an external set's, or the
  manifest's, never trained on once the place is left out): the AUC of p(COVID-19) between its
  test-side COVID-19 images and those adults. No hospital shortcut can help there, since both
  sides come from the one place.

The learning curve repeats this on a share of the training COVID-19 patients, and also trains
on every source at the same shares, to ask whether more images of one hospital help, or only
more hospitals; the curve by regions (places.region_curve) asks it by counting places.
"""

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from covidxray.data.splitting import task_rows
from covidxray.evaluation.places import COVID
from covidxray.evaluation.scoring import spread

EVERY = "every source"  # runs that train on every COVID-19 source, none left out
WITHOUT = "all but the scored source"  # the left-out runs, on the learning curve
TARGET_NAMES = {"recall": "recall", "false_alarm": "false alarms",
                "within_source_auc": "within-source AUC"}


def covid_share(rows, fraction, seed):
    """The rows with only `fraction` of each source's COVID-19 images, taken as whole patients in
    a seeded random order (at least one patient a source); the other classes stay whole."""
    if fraction == 1:
        return rows
    kept, rng = [], np.random.default_rng(seed)
    for _, covid in rows[rows["class"] == COVID].groupby("source"):
        counts = covid.groupby("patient").size()
        order = rng.permutation(np.sort(counts.index.to_numpy()))
        enough = np.searchsorted(np.cumsum(counts[order].to_numpy()), fraction * len(covid))
        kept += list(order[:enough + 1])
    return rows[(rows["class"] != COVID) | rows["patient"].isin(kept)]


def called_covid(probs, classes):
    """Whether each image's most probable class is COVID-19."""
    return np.asarray(probs).argmax(axis=1) == list(classes).index(COVID)


def adults_without_covid(rows):
    return rows[(rows["age_group"] == "adult") & (rows["class"] != COVID)]


def share(called):
    return float(np.mean(called)) if len(called) else None


def rows_without_place(parts, task, left_out):
    """One split's rows of the task with `left_out` (a places.Place, or None for none) taken out
    of training and validation, and the rows it is scored on: its validation patients' COVID-19
    images and those of its other patients (val_covid and test_covid; with none left out, the
    validation and test COVID-19 images of every source), the adults without COVID-19 of each
    side."""
    rows = {name: task_rows(parts[name], task, f"split, {name}") for name in parts}
    held = {name: left_out.holds(r) if left_out else pd.Series(True, index=r.index)
            for name, r in rows.items()}
    kept = {name: r[~held[name]] if left_out else r for name, r in rows.items()}
    scored = {name: r[(r["class"] == COVID) & held[name]] for name, r in rows.items()}
    never_used = [scored["test"]] if left_out is None else [scored["train"], scored["test"]]
    return {"train": kept["train"], "val": kept["val"], "val_covid": scored["val"],
            "test_covid": pd.concat(never_used),
            "val_alarm": adults_without_covid(kept["val"]),
            "test_alarm": adults_without_covid(kept["test"])}


def run_scores(predict, rows, classes, within=None):
    """One trained model's leave-one-out scores. predict: rows -> class probabilities; within:
    (probabilities, rows) of the left-out source's own adults without COVID-19. `images` holds
    the manifest rows scored, for the intervals (not written)."""
    covid = list(classes).index(COVID)
    probs = {key: np.asarray(predict(rows[key])) if len(rows[key]) else np.empty((0, len(classes)))
             for key in ("val_covid", "test_covid", "val_alarm", "test_alarm")}
    result = {side: {"recall": share(called_covid(probs[f"{side}_covid"], classes)),
                     "false_alarm": share(called_covid(probs[f"{side}_alarm"], classes))}
              for side in ("val", "test")}
    result["train_covid"] = int((rows["train"]["class"] == COVID).sum())
    result["images"] = {key: set(rows[key]["image"]) for key in probs}
    if within is not None:
        negative_probs, negatives = within
        positive, negative = probs["test_covid"][:, covid], np.asarray(negative_probs)[:, covid]
        result["test"]["within_source"] = {
            "auc": float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))],
                                       np.r_[positive, negative])),
            "other_called_covid": share(called_covid(negative_probs, classes)),
            "n_other": len(negatives)}
    return result


def within_source_rows(rows, place):
    """The adults without COVID-19 of a place (places.Place) among `rows`, an external set's or
    the manifest's (a left-out place's own, never trained on): negatives of the within-place
    test."""
    return adults_without_covid(rows[place.holds(rows)])


def wilson(rate, n):
    """95% Wilson interval of a share, on n distinct images."""
    if rate is None or not n:
        return None
    interval = binomtest(round(rate * n), n).proportion_ci(0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def auc_interval(auc, n_positive, n_negative):
    """95% interval of an AUC by Hanley and McNeil (1982), clipped to [0, 1]."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    se = np.sqrt((auc * (1 - auc) + (n_positive - 1) * (q1 - auc ** 2)
                  + (n_negative - 1) * (q2 - auc ** 2)) / (n_positive * n_negative))
    z = norm.ppf(0.975)
    return [float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))]


def side_spread(runs, side):
    """Spread over the splits of one side's recall and false alarms, with 95% intervals of the
    mean over the distinct images scored (an image is scored in several splits)."""
    out = {}
    for key, images in (("recall", f"{side}_covid"), ("false_alarm", f"{side}_alarm")):
        values = [r[side][key] for r in runs if r[side][key] is not None]
        distinct = len(set().union(*(r["images"][images] for r in runs)))
        out[key] = spread(values) if values else None
        out[f"{key}_ci95"] = wilson(out[key]["mean"], distinct) if values else None
        out[f"{key}_images"] = distinct
    within = [r[side]["within_source"] for r in runs if "within_source" in r[side]]
    if within:
        auc = spread([w["auc"] for w in within])
        out["within_source"] = {
            "auc": auc,
            "auc_ci95": auc_interval(auc["mean"], out["recall_images"], within[0]["n_other"]),
            "other_called_covid": spread([w["other_called_covid"] for w in within]),
            "n_other": within[0]["n_other"]}
    return out


def place_spread(runs):
    """A left-out source's (or the all-sources run's) scores over the splits."""
    return {"val": side_spread(runs, "val"), "test": side_spread(runs, "test"),
            "train_covid": spread([r["train_covid"] for r in runs])}


def verdict(left_out, targets, groups):
    """The headline: the mean over every left-out place (groups: "collections" and "regions",
    each a list of names of left_out) of test recall and false alarms, and the mean over the
    collections of the within-collection AUC, against the targets; and each group's means."""
    def means(names):  # a place none of whose splits scored a side has no mean
        return {key: float(np.mean([left_out[n]["test"][key]["mean"] for n in names
                                    if left_out[n]["test"][key]]))
                for key in ("recall", "false_alarm")}

    mean = means(list(left_out))
    aucs = [left_out[n]["test"]["within_source"]["auc"]["mean"] for n in groups["collections"]
            if "within_source" in left_out[n]["test"]]
    result = {**mean, "within_source_auc": float(np.mean(aucs)) if aucs else None,
              "by_group": {group: means(names) for group, names in groups.items() if names}}
    result["met"] = {"recall": mean["recall"] >= targets.recall,
                     "false_alarm": mean["false_alarm"] <= targets.false_alarm,
                     "within_source_auc": None if not aucs
                     else result["within_source_auc"] >= targets.within_source_auc}
    return result


def verdict_lines(result):
    """The verdict and each left-out source's scores in plain words."""
    v, t = result["verdict"], result["targets"]
    met = ", ".join(f"{TARGET_NAMES[key]} {'met' if ok else 'missed'}"
                    for key, ok in v["met"].items() if ok is not None)
    places = f"{len(result['sources'])} collections"
    if result["regions"]:
        places += f" and {len(result['regions'])} regions of {result['region_source']}"
    lines = [f"Trained without each COVID-19 place in turn ({places}; task {result['task']},"
             f" {result['splits']} splits), the model finds {v['recall']:.0%} of the left-out"
             f" place's COVID-19 X-rays (target at least {t['recall']:.0%}) and calls"
             f" {v['false_alarm']:.0%} of the adults without COVID-19 COVID-19 (target at most"
             f" {t['false_alarm']:.0%}): {met}."]
    for source, s in result["left_out"].items():
        test, of = s["test"], f" ({s['collection']})" if "collection" in s else ""
        line = (f"Without {source}{of}: recall {test['recall']['mean']:.2f}"
                f" ({ci(test['recall_ci95'])}, {test['recall_images']} images), false alarms"
                f" {test['false_alarm']['mean']:.2f} ({ci(test['false_alarm_ci95'])},"
                f" {test['false_alarm_images']} adults)")
        within = test.get("within_source")
        if within:
            line += (f"; within {source}, COVID-19 against its own {within['n_other']} adults"
                     f" without it: AUC {within['auc']['mean']:.2f} ({ci(within['auc_ci95'])},"
                     f" target {t['within_source_auc']:.2f})")
        lines.append(line + ".")
    return lines


def ci(interval):
    return f"95% CI {interval[0]:.2f}-{interval[1]:.2f}"


def curve_points(runs):
    """The learning curve from every run, {(left-out source or EVERY, fraction): [scores]}: per
    (what trained, fraction), the mean over the splits (and the left-out sources) of the
    training COVID-19 images, test recall and false alarms."""
    grouped = {}
    for (trained_on, fraction), results in runs.items():
        side = EVERY if trained_on == EVERY else WITHOUT
        grouped.setdefault((side, fraction), []).extend(results)
    return [{"trained_on": trained_on, "fraction": fraction,
             "train_covid": float(np.mean([r["train_covid"] for r in results])),
             **{key: float(np.mean([r["test"][key] for r in results
                                    if r["test"][key] is not None]))
                for key in ("recall", "false_alarm")}}
            for (trained_on, fraction), results in sorted(grouped.items())]
