"""Verify a rebuild against a commit: the same results, up to what the hardware moves.

    covidxray verify [--rev REV]    # after `dvc repro --force` (`make verify` runs both)

Compares every numeric leaf of the workspace's metrics/*.json and metrics/detail/**/*.json with
the same file at REV (default HEAD), and the outputs' md5 in dvc.lock with REV's. Each metric's
tolerance comes from REV's spread over the repeated splits: 2*sd/sqrt(N) for a mean of N
splits, 2*sd for one split's value, at least two test images; data counts must match exactly;
loss, precision and F1 are left out. docs/reproducibility.md gives the rules in full, why, and
what a rebuild on another machine moved. Exit status 0: same within tolerance; 1: a metric moved
past its tolerance, or a file or key is on one side only; 2: REV is not usable.
"""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import yaml

from covidxray.app.tolerances import (EVERY_TASK, HOLDOUT, REPEAT, metric_path, metric_tolerance,
                                      share_tolerance, spreads, tail, widest)
from covidxray.errors import PipelineError
from covidxray.paths import DETAIL, METRICS, PARAMS_FILE

LEFT_OUT = ("loss", "precision", "f1", "threshold", "median_distance")  # docs/reproducibility.md
SHOWN = {"accuracy": ("test", "accuracy"), "auc": ("test", "auc"),
         "covid recall": ("test", "per_class", "covid", "recall"),
         "adult false alarms": ("test", "by_source", "adult_false_alarm"),
         "recall": ("test", "recall"), "false alarms": ("test", "false_alarm"),
         "within auc": ("test", "within_source", "auc")}  # the tolerances printed, where found
LOCK = Path("dvc.lock")
HOLDOUT_DETAIL = DETAIL / "holdout.json"


def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True)


def is_metric_file(path):
    path = Path(path)
    return path.suffix == ".json" and (path.parent == METRICS or DETAIL in path.parents)


def committed_text(rev, path):
    """The file at rev, or None where rev has none."""
    shown = git("show", f"{rev}:{path}")
    return shown.stdout if shown.returncode == 0 else None


def committed_files(rev):
    listed = git("ls-tree", "-r", "--name-only", rev, "--", f"{METRICS}/")
    return {Path(name) for name in listed.stdout.splitlines() if is_metric_file(name)}


def workspace_files():
    return set(METRICS.glob("*.json")) | set(DETAIL.glob("**/*.json"))


def parsed(text, where):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PipelineError(f"{where} is not JSON ({err}): rerun the stage that writes it"
                            ) from None


def leaves(data, key=(), holder=None):
    """(dotted key as a tuple, number, the dict nearest above it) of every numeric leaf."""
    if isinstance(data, dict):
        for name, value in data.items():
            if not (name == "values" and isinstance(value, list)):  # per-split lists
                yield from leaves(value, (*key, name), data)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, (*key, str(index)), holder)
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield key, data, holder


def two_images(rev):
    """Two images of a test class, as a share: 2/split.test_per_class of rev's params (0 if
    it has none)."""
    params = yaml.safe_load(committed_text(rev, PARAMS_FILE) or "{}") or {}
    per_class = params.get("split", {}).get("test_per_class")
    return 2 / per_class if per_class else 0.0


def tolerances(rev):
    """{owner: {entry key: (sd, N)}} from rev's repeat.json and holdout.json."""
    text = committed_text(rev, REPEAT)
    if text is None:
        raise PipelineError(f"{rev} has no {REPEAT}, which the tolerances come from: name a"
                            " commit with the repeat stage's metrics (git log -- metrics)")
    owners = {task: spreads(entries) for task, entries in parsed(text, f"{rev}:{REPEAT}").items()}
    holdout = committed_text(rev, HOLDOUT_DETAIL)
    holdout = spreads(parsed(holdout, f"{rev}:{HOLDOUT_DETAIL}")) if holdout else {}
    return {**owners, HOLDOUT: holdout, EVERY_TASK: widest(owners.values())}


def compare_file(path, committed, current, spreads_, step):
    """(key, committed, workspace, tolerance) of every metric not LEFT_OUT; None for a side
    without it."""
    before = {key: (value, holder) for key, value, holder in leaves(committed)}
    after = {key: value for key, value, _ in leaves(current)}
    rows = []
    for key in sorted(before.keys() | after.keys()):
        if metric_path(path, key)[-1] in LEFT_OUT:
            continue
        value, holder = before.get(key, (None, {}))
        allowed = None if value is None else metric_tolerance(path, key, value, holder,
                                                              committed, spreads_, step)
        rows.append((".".join(key), value, after.get(key), allowed))
    return rows


def out_hashes(text):
    stages = yaml.safe_load(text)["stages"]
    return {out["path"]: out.get("md5") for stage in stages.values()
            for out in stage.get("outs", [])}


def outputs_report(rev):
    """Lines on which of dvc.lock's outputs are byte-identical with rev's."""
    committed = committed_text(rev, LOCK)
    if committed is None or not LOCK.is_file():
        return [f"dvc.lock: none {'at ' + rev if committed is None else 'in the workspace'};"
                " outputs not compared"]
    before, after = out_hashes(committed), out_hashes(LOCK.read_text())
    same = sorted(p for p in before.keys() & after.keys() if before[p] == after[p])
    differ = sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    lines = [f"outputs byte-identical with {rev}: {len(same)} ({', '.join(same) or 'none'})",
             f"outputs that differ: {len(differ)} ({', '.join(differ) or 'none'}); on another"
             " machine data/features and what is made from it differ, data/split and"
             " data/prepared should not"]
    for side, paths in (("the workspace's", after.keys() - before.keys()),
                        (f"{rev}'s", before.keys() - after.keys())):
        if paths:
            lines.append(f"outputs only in {side} dvc.lock: {', '.join(sorted(paths))}")
    return lines


def precision_report(rev, tasks):
    """A line for each task whose backbone ran in another precision at rev than here: with
    backbone.precision `auto` each machine picks its own, and that moves the models further
    than the kernels alone do."""
    lines = []
    for task in sorted(tasks):
        path = DETAIL / f"{task}.json"
        sides = [committed_text(rev, path), path.read_text() if path.is_file() else None]
        before, after = (parsed(text, path).get("precision") if text else None for text in sides)
        if before and after and before != after:
            lines.append(f"{path}: the backbone ran in {before} at {rev} and in {after} here"
                         " (backbone.precision auto picks it per machine; set it to compare"
                         " like with like)")
    return lines


def check_revision(rev):
    found = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if found.returncode:
        reason = (found.stderr.strip().splitlines() or ["not a commit"])[-1]
        raise PipelineError(f"{rev}: no such revision here ({reason}); name a commit, branch or"
                            " tag with --rev")
    files = committed_files(rev)
    if not files:
        raise PipelineError(f"{rev} has no {METRICS}/*.json: name a commit with the pipeline's"
                            " metrics (git log -- metrics)")
    return files


def print_tolerances(rev, spreads_, step):
    print(f"tolerance, from {rev}'s repeated splits (the rules: docs/reproducibility.md):"
          f" a mean of N splits 2*sd/sqrt(N), one split's value 2*sd, but at least {step:.3g}"
          " (two test images of a class, or of the n beside it) over N splits; loss, precision"
          " and F1 not compared. Mean / one split:")
    for name, spread in spreads_.items():
        shown = []
        for label, wanted in SHOWN.items():
            if any(tail(key, wanted) == len(wanted) for key in spread):
                of = [share_tolerance(spread, wanted, of_mean, step) for of_mean in (True, False)]
                one = "" if name == HOLDOUT else f" / {of[1]:.3g}"  # means only
                shown.append(f"{label} {of[0]:.3g}{one}")
        print(f"  {name}: {', '.join(shown) or 'none: exact'}")
    print("so it catches any data count that changed and a mean over splits moved past its"
          " tolerance (a broken stage, a lost class or source); it cannot tell one split's value"
          " moved by fewer test images than its tolerance from a CPU's rounding: judge a change"
          " by the means (docs/reproducibility.md#what-it-can-and-cannot-catch)")


def compare_files(rev, committed, spreads_, step):
    """Every metric's row (file, key, committed, workspace, tolerance), and a line for each file
    on one side only."""
    current = workspace_files()
    one_side = [f"{path}: not in the workspace" for path in sorted(committed - current)]
    one_side += [f"{path}: not at {rev}" for path in sorted(current - committed)]
    rows = []
    for path in sorted(committed & current):
        before = parsed(committed_text(rev, path), f"{rev}:{path}")
        after = parsed(path.read_text(), path)
        rows += [(path, *row) for row in compare_file(path, before, after, spreads_, step)]
    return rows, one_side


def verdict(rev, rows, one_side):
    """Print what moved; 0 when every metric is within its tolerance, 1 when not."""
    moved, identical, past = [], 0, []
    for path, key, before, after, allowed in rows:
        if before is None or after is None:
            one_side.append(f"{path} {key}: committed {number(before)}, workspace"
                            f" {number(after)}")
        elif before == after or math.isnan(before) and math.isnan(after):
            identical += 1
        elif abs(after - before) <= allowed * (1 + 1e-9):
            moved.append((abs(after - before) / allowed, path, key, before, after, allowed))
        else:
            past.append(f"{path} {key}: committed {number(before)}, workspace {number(after)},"
                        f" tolerance {allowed:.3g}")
    if past or one_side:
        print(*past, *one_side, sep="\n")
        print(f"not the same: {len(past)} of {len(rows)} metrics moved past their tolerance,"
              f" {len(one_side)} files or keys on one side only (compared with {rev})")
        return 1
    largest = ""
    if moved:
        _, path, key, before, after, allowed = max(moved)
        largest = (f" (largest: {path} {key} {number(before)} -> {number(after)},"
                   f" tolerance {allowed:.3g})")
    print(f"same within tolerance: {len(rows)} metrics compared, {identical} identical,"
          f" {len(moved)} moved within tolerance{largest}")
    return 0


def verify(rev):
    if not METRICS.is_dir():
        raise PipelineError(f"no {METRICS}/ here: run it from the repository's root")
    committed = check_revision(rev)
    spreads_, step = tolerances(rev), two_images(rev)
    print_tolerances(rev, spreads_, step)
    print(*outputs_report(rev), *precision_report(rev, spreads_.keys() - {HOLDOUT, EVERY_TASK}),
          sep="\n")
    return verdict(rev, *compare_files(rev, committed, spreads_, step))


def number(value):
    return "none" if value is None else f"{value:.6g}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="covidxray verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="the commit to compare with (HEAD)")
    args = parser.parse_args(argv)
    try:
        return verify(args.rev)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
