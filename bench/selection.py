"""The selection table: every experiment's validation scores over the repeated splits.

    python -m bench.selection [--rev COMMIT]    # markdown table on stdout, best first
    python -m bench.selection --shortcut TASK   # the source shortcut on TASK's validation

Reads `dvc exp show --csv` (the experiments on HEAD, or on COMMIT), with each experiment's
metrics/detail/repeat.json and holdout.json from its commit, and ranks candidates by the
mean over the tasks of their validation accuracy, averaged over `repeat`'s splits, with the mean
validation loss as the tie-break. Only validation scores are shown: the test split is looked at
once, after the choice. The reference row is the logistic regression that `repeat` fits beside
every head.

With --shortcut, candidates are ranked for a source-aware task by its validation COVID-19 recall
less its adult false-alarm rate (the share of validation adults without COVID-19 called COVID-19).

With --holdout, by the leave-one-place-out validation (the `holdout` stage): for each COVID-19
collection and region left out of training, the recall on its validation patients less the
false alarms on the validation adults without COVID-19, averaged over the left-out places.
"""

import argparse
import io
import json
import subprocess
import sys

import pandas as pd
import yaml

from covidxray.errors import PipelineError

from covidxray.config.params import load_params
from covidxray.evaluation.places import collections, regions
from covidxray.paths import PARAMS_FILE
from covidxray.runner import cli


def experiments(rev):
    """`dvc exp show`'s table of the experiments on rev (HEAD when None), with their base."""
    args = [sys.executable, "-m", "dvc", "exp", "show", "--csv", *(["--rev", rev] if rev else [])]
    shown = subprocess.run(args, capture_output=True, text=True)
    if shown.returncode:
        reason = (shown.stderr.strip().splitlines() or ["no message"])[-1]
        raise PipelineError(f"dvc exp show{' --rev ' + rev if rev else ''} failed: {reason}")
    table = pd.read_csv(io.StringIO(shown.stdout))
    if (table["typ"] == "baseline").all():  # dvc leaves out the State column too then
        raise PipelineError(f"no experiments on {rev or 'HEAD'} in this clone: queue and run"
                            " some (docs/model-selection.md), or `dvc exp pull REMOTE` those"
                            " another clone pushed")
    table = pd.concat([table, table["Experiment"].fillna(table["rev"]).rename("name")], axis=1)
    failed = table["State"].fillna("") == "Failed"  # a failed run shows its base's metrics
    return with_detail(table[(table["name"] != "workspace") & ~failed].drop_duplicates("name"))


def with_detail(table):
    """The table with each experiment's repeat and holdout scores, read from metrics/detail/ in
    its commit (`dvc exp show` shows the headline metrics only), named as `dvc exp show` names
    metrics: binary.head.val.accuracy.mean, left_out.hannover.val.recall.mean, ..."""
    rows = []
    for rev in table["rev"]:
        found = {}
        for name in ("repeat", "holdout"):
            shown = subprocess.run(["git", "show", f"{rev}:metrics/detail/{name}.json"],
                                   capture_output=True, text=True)
            if shown.returncode == 0:  # an older commit, or a run that skipped the stage
                found.update(pd.json_normalize(json.loads(shown.stdout), sep=".").iloc[0])
        rows.append(found)
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def dotted(params, prefix=""):
    """params.yaml's keys as `dvc exp show` names them: seed, tasks.binary.lr, ..."""
    for key, value in params.items():
        if isinstance(value, dict):
            yield from dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def changed_params(table, row):
    """The params of an experiment that differ from its baseline commit's, as -S would set them."""
    base = table[table["typ"] == "baseline"].iloc[0]
    return " ".join(f"{c}={row[c]}" for c in PARAMS if c in table.columns
                    and str(row[c]) != str(base[c]))


def score(row, model, task, key, stats=("mean", "sd")):
    """The validation metric's mean and sd over the splits; NaN where the run has none."""
    return tuple(pd.to_numeric(row.get(f"{task}.{model}.val.{key}.{s}"), errors="coerce")
                 for s in stats)


def tasks_in(table):
    """The tasks of params.yaml that the experiments scored (older commits had fewer)."""
    return [t for t in TASKS if f"{t}.head.val.accuracy.mean" in table.columns]


def ranked(table, tasks):
    rows = []
    for _, row in table.iterrows():
        cells = {task: score(row, "head", task, "accuracy") for task in tasks}
        losses = [score(row, "head", task, "loss", ("mean",))[0] for task in tasks]
        if any(pd.isna(mean) for mean, _ in cells.values()):
            continue  # failed, still queued, or from before repeat scored validation
        rows.append({"name": row["name"], "params": changed_params(table, row), "cells": cells,
                     "accuracy": sum(m for m, _ in cells.values()) / len(tasks),
                     "loss": sum(losses) / len(tasks)})
    return sorted(rows, key=lambda r: (-r["accuracy"], r["loss"]))


def shortcut_scores(row, model, task):
    """Validation accuracy, COVID-19 recall (over the covid groups) and adult false alarms."""
    prefix = f"{task}.{model}.val.by_source."
    recall = [c for c in row.index if c.startswith(prefix + "groups.covid/")
              and c.endswith(".recall.mean")]
    recall = pd.to_numeric(row[recall], errors="coerce").mean() if recall else float("nan")
    return {"accuracy": score(row, model, task, "accuracy"), "recall": (recall,),
            "alarm": score(row, model, task, "by_source.adult_false_alarm")}


def shortcut_ranked(table, task):
    rows = [{"name": row["name"], "params": changed_params(table, row),
             **shortcut_scores(row, "head", task)} for _, row in table.iterrows()]
    rows = [r for r in rows if not pd.isna(r["alarm"][0]) and not pd.isna(r["recall"][0])]
    return sorted(rows, key=lambda r: r["alarm"][0] - r["recall"][0])


def shortcut_markdown(rows, reference, task):
    def cells(r):
        return (f"{r['accuracy'][0]:.3f} ± {r['accuracy'][1]:.3f} | {r['recall'][0]:.2f} |"
                f" {r['alarm'][0]:.2f} ± {r['alarm'][1]:.2f} |"
                f" {r['recall'][0] - r['alarm'][0]:.2f}")
    lines = [f"| candidate | params changed from the base commit | {task} val accuracy | COVID-19"
             " recall | adult false alarms | recall less false alarms |", "| --- " * 6 + "|"]
    lines += [f"| {r['name']} | {r['params'] or '(the base)'} | {cells(r)} |" for r in rows]
    lines.append(f"| reference | logistic regression on the base's features | {cells(reference)} |")
    return "\n".join(lines)


def holdout_scores(row, sources):
    """Per left-out source, validation recall and false alarms (mean, sd over the splits)."""
    return {source: {key: tuple(pd.to_numeric(row.get(f"left_out.{source}.val.{key}.{s}"),
                                              errors="coerce") for s in ("mean", "sd"))
                     for key in ("recall", "false_alarm")} for source in sources}


def holdout_ranked(table, sources):
    rows = []
    for _, row in table.iterrows():
        cells = holdout_scores(row, sources)
        means = {key: sum(c[key][0] for c in cells.values()) / len(sources)
                 for key in ("recall", "false_alarm")}
        if not any(pd.isna(v) for v in means.values()):  # queued, failed or from before holdout
            rows.append({"name": row["name"], "params": changed_params(table, row),
                         "cells": cells, **means, "splits": row.get("holdout.splits")})
    return sorted(rows, key=lambda r: r["false_alarm"] - r["recall"])


def holdout_markdown(rows, sources):
    """One row a candidate: each left-out place's validation recall (its false alarms are on
    the same adults whichever place is out: only their mean is shown), then the means."""
    lines = ["| candidate | params changed from the base commit | splits | "
             + " | ".join(f"without {s}" for s in sources)
             + " | mean recall | mean false alarms | recall less false alarms |",
             "| --- " * (6 + len(sources)) + "|"]
    for r in rows:
        cells = " | ".join(f"{c['recall'][0]:.2f} ± {c['recall'][1]:.2f}"
                           for c in r["cells"].values())
        lines.append(f"| {r['name']} | {r['params'] or '(the base)'} | {r['splits']} | {cells} |"
                     f" {r['recall']:.2f} | {r['false_alarm']:.2f} |"
                     f" {r['recall'] - r['false_alarm']:.2f} |")
    return "\n".join(lines)


def markdown(rows, reference, tasks):
    lines = ["| candidate | params changed from the base commit | "
             + " | ".join(f"{t} val accuracy" for t in tasks) + " | mean val accuracy | mean val"
             " loss |", "| --- " * (4 + len(tasks)) + "|"]
    for r in rows:
        cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in r["cells"].values())
        lines.append(f"| {r['name']} | {r['params'] or '(the base)'} | {cells}"
                     f" | {r['accuracy']:.3f} | {r['loss']:.3f} |")
    cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in reference.values())
    mean = sum(m for m, _ in reference.values()) / len(tasks)
    lines.append(f"| reference | logistic regression, C=1, standardised average-pooled features"
                 f" | {cells} | {mean:.3f} | |")
    return "\n".join(lines)


PARAMS = list(dotted(yaml.safe_load(PARAMS_FILE.read_text())))
TASKS = list(load_params().tasks)


@cli
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="the commit the experiments ran on (default HEAD)")
    parser.add_argument("--shortcut", metavar="TASK", choices=TASKS,
                        help="rank by TASK's COVID-19 recall less its adult false alarms")
    parser.add_argument("--holdout", action="store_true",
                        help="rank by leave-one-place-out validation recall less false alarms")
    args = parser.parse_args()
    table = experiments(args.rev)
    if args.holdout:
        spec = load_params().holdout
        places = [place.name for place in collections(spec) + regions(spec)]
        print(holdout_markdown(holdout_ranked(table, places), places))
        return
    base = table[table["typ"] == "baseline"].iloc[0]
    if args.shortcut:
        print(shortcut_markdown(shortcut_ranked(table, args.shortcut),
                                shortcut_scores(base, "reference", args.shortcut), args.shortcut))
        return
    tasks = tasks_in(table)
    print(markdown(ranked(table, tasks), {t: score(base, "reference", t, "accuracy")
                                          for t in tasks}, tasks))


if __name__ == "__main__":
    main()
