"""The selection table: every experiment's validation scores over the repeated splits.

    python -m bench.selection [--rev COMMIT]    # markdown table on stdout, best first

Reads `dvc exp show --csv` (the experiments on HEAD, or on COMMIT) and ranks candidates by the mean over the tasks of their validation accuracy,
averaged over `repeat`'s splits, with the mean validation loss as the tie-break. Only
validation scores are shown: the test split is looked at once, after the choice. The reference
row is the logistic regression that `repeat` fits beside every head.
"""

import argparse
import io
import subprocess
import sys

import pandas as pd

from covidxray.common import load_params


def experiments(rev):
    args = [sys.executable, "-m", "dvc", "exp", "show", "--csv", *(["--rev", rev] if rev else [])]
    table = pd.read_csv(io.StringIO(subprocess.run(args, check=True, capture_output=True,
                                                   text=True).stdout))
    table = pd.concat([table, table["Experiment"].fillna(table["rev"]).rename("name")], axis=1)
    failed = table["State"].fillna("") == "Failed"  # a failed run shows its base's metrics
    return table[(table["name"] != "workspace") & ~failed].drop_duplicates("name")


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


def ranked(table):
    rows = []
    for _, row in table.iterrows():
        cells = {task: score(row, "head", task, "accuracy") for task in TASKS}
        losses = [score(row, "head", task, "loss", ("mean",))[0] for task in TASKS]
        if any(pd.isna(mean) for mean, _ in cells.values()):
            continue  # failed, still queued, or from before repeat scored validation
        rows.append({"name": row["name"], "params": changed_params(table, row), "cells": cells,
                     "accuracy": sum(m for m, _ in cells.values()) / len(TASKS),
                     "loss": sum(losses) / len(TASKS)})
    return sorted(rows, key=lambda r: (-r["accuracy"], r["loss"]))


def markdown(rows, reference):
    lines = ["| candidate | params changed from the base commit | "
             + " | ".join(f"{t} val accuracy" for t in TASKS) + " | mean val accuracy | mean val"
             " loss |", "| --- " * (4 + len(TASKS)) + "|"]
    for r in rows:
        cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in r["cells"].values())
        lines.append(f"| {r['name']} | {r['params'] or '(the base)'} | {cells}"
                     f" | {r['accuracy']:.3f} | {r['loss']:.3f} |")
    cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in reference.values())
    mean = sum(m for m, _ in reference.values()) / len(TASKS)
    lines.append(f"| reference | logistic regression, C=1, standardised average-pooled features"
                 f" | {cells} | {mean:.3f} | |")
    return "\n".join(lines)


PARAMS = list(dotted(load_params()))
TASKS = list(load_params()["tasks"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="the commit the experiments ran on (default HEAD)")
    table = experiments(parser.parse_args().rev)
    base = table[table["typ"] == "baseline"].iloc[0]
    print(markdown(ranked(table), {t: score(base, "reference", t, "accuracy") for t in TASKS}))


if __name__ == "__main__":
    main()
