"""The tolerances of `make verify` (covidxray/app/verify.py): whose spread over the repeated splits
a metric takes, which of that owner's entries stands for it, and how wide that makes its band
(docs/reproducibility.md gives the rules). Pure functions of the parsed metrics; verify reads them
from git and the workspace."""

import math

from covidxray.paths import DETAIL, EXTERNAL_METRICS, METRICS

STATS = ("mean", "sd", "min", "max")
STANDS_FOR = {"covid_recall": [("test", "per_class", "covid", "recall"), ("test", "recall")],
              "false_alarm": [("test", "by_source", "adult_false_alarm"), ("test", "false_alarm")],
              "ci95_low": [("test", "accuracy")], "ci95_high": [("test", "accuracy")],
              "share": [("called_covid",)], "within_auc": [("test", "within_source", "auc")],
              "within_source_auc": [("test", "within_source", "auc")]}
CALLS = {"correct": "accuracy", "confusion_matrix": "accuracy", "called_covid": "called_covid",
         "flagged": "share_flagged"}
HOLDOUT, EVERY_TASK = "holdout", "every task"
REPEAT, OOD = DETAIL / "repeat.json", DETAIL / "ood.json"


def metric_path(path, key):
    """The tail a metric's entries end with (docs/reproducibility.md)."""
    parts = [part for part in key if not part.isdigit() and part not in STATS]
    parts[-1] = parts[-1].removesuffix("_ci95")
    if path.parent == METRICS or EXTERNAL_METRICS in path.parents:
        parts.insert(0, "test")  # a headline, or an external set: scored as the test split
    return tuple("test" if part == "verdict" else part for part in parts)


def widest(spreads_):
    """{entry key: (sd, N)}, the largest sd of each key in any of spreads_."""
    found = {}
    for spread in spreads_:
        for key, entry in spread.items():
            found[key] = max(found.get(key, entry), entry)
    return found


def spreads(data, key=()):
    """{entry key: (sd, N)} of every repeat entry in data."""
    if isinstance(data, dict) and "sd" in data and isinstance(data.get("values"), list):
        finite = math.isfinite(data["sd"])  # NaN: a metric no split had
        return {key: (data["sd"], len(data["values"]))} if finite else {}
    return widest(spreads(value, (*key, name))
                  for name, value in (data.items() if isinstance(data, dict) else ()))


def tail(a, b):
    """How many last parts a and b share."""
    shared = 0
    while shared < min(len(a), len(b)) and a[-1 - shared] == b[-1 - shared]:
        shared += 1
    return shared


def matching_sd(spread, wanted):
    """(sd, N) of the owner's entries that end with the longest tail of wanted or what its name
    stands for, the largest; else of its accuracy; None when it has neither."""
    tails = [wanted, *(wanted[:-1] + alias for alias in STANDS_FOR.get(wanted[-1], []))]
    for tails_ in (tails, [("accuracy",)]):
        best = max((max(tail(key, t) for t in tails_) for key in spread), default=0)
        if best:
            return max(entry for key, entry in spread.items()
                       if max(tail(key, t) for t in tails_) == best)
    return None


def owner(path, key, data, tasks):
    """Whose spread a metric takes (docs/reproducibility.md), or None: it must match exactly."""
    named = [part for part in path.relative_to(METRICS).with_suffix("").parts if part in tasks]
    if named:  # metrics/T.json, metrics/detail/T.json, an external set's scores by T
        return named[-1]
    if path.stem == HOLDOUT:
        return HOLDOUT
    if path == REPEAT:
        return key[0]
    if path == DETAIL / "confound.json":
        return key[1] if key[0] == "models" else EVERY_TASK
    if path == OOD:  # one reference for every task's inputs
        return EVERY_TASK
    if path == DETAIL / "controls.json":
        return EVERY_TASK if key[0] == "age_probe" else data.get("task")
    return None


def share_tolerance(spread, wanted, of_mean, step):
    """max(2*sd/sqrt(N), step/N) for a mean of N splits, else max(2*sd, step); 0 without an
    entry."""
    found = matching_sd(spread, wanted)
    if found is None:
        return 0.0
    sd, splits = found
    return max(2 * sd / math.sqrt(splits), step / splits) if of_mean else max(2 * sd, step)


def tolerance(spread, wanted, value, holder, of_mean, step):
    """A metric's tolerance by its owner's entries (docs/reproducibility.md); step: two images of a
    test class, or of the n beside the metric where fewer."""
    n = holder.get("n")
    if isinstance(n, int) and n > 0:
        step = max(step, 2 / n)
    if not isinstance(value, int):
        return share_tolerance(spread, wanted, of_mean, step)
    if wanted[-1] in CALLS and isinstance(n, int):
        return share_tolerance(spread, (*wanted[:-1], CALLS[wanted[-1]]), of_mean, step) * n
    return 0.0  # images, classes, folds: the data are the same on any machine


def metric_tolerance(path, key, value, holder, committed, spreads_, step):
    """The tolerance of the metric at key of the file at path (docs/reproducibility.md)."""
    who = owner(path, key, committed, set(spreads_) - {HOLDOUT, EVERY_TASK})
    of_mean = "mean" in key or who == HOLDOUT and not set(key) & {"sd", "min", "max"}
    return tolerance(spreads_.get(who, {}), metric_path(path, key), value, holder, of_mean, step)
