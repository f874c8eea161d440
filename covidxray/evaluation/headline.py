"""A task's headline: the few numbers `dvc metrics show` prints and the report opens with, and
its verdict in one sentence; and how a number is written for a person (the report, the demo's
model card). The detail they come from lives under metrics/detail/."""

import numpy as np

DIGITS = 4  # enough for 63 test images; the detail files keep every digit


def number(value):
    return "n/a" if value is None else f"{value:.3f}"


def interval(low, high):
    return f"{low:.2f}-{high:.2f}"


def adult_false_alarm(sides):
    """The share of adults without COVID-19 called COVID-19 over scored sets (the test split's
    and each external set's by_source), each image counted once; None when no set has such
    adults or the task no covid class."""
    scored = [(s["adult_false_alarm"], s["adult_false_alarm_n"]) for s in sides
              if s["adult_false_alarm"] is not None]
    n = sum(count for _, count in scored)
    return float(np.dot(*zip(*scored)) / n) if n else None


def rounded(value):
    return None if value is None else round(value, DIGITS)


def task_headline(metrics, external):
    """metrics/<task>.json from evaluate's test metrics and its external sets' metrics."""
    test = metrics["test"]
    covid = test["per_class"].get("covid")
    low, high = test["accuracy_ci95"]
    return {"accuracy": rounded(test["accuracy"]), "ci95_low": rounded(low),
            "ci95_high": rounded(high),
            "covid_recall": rounded(covid["recall"]) if covid else None,
            "false_alarm": rounded(adult_false_alarm(
                [test["by_source"], *(m["by_source"] for m in external)]))}


def holdout_headline(verdict):
    """metrics/holdout.json: the leave-one-place-out verdict's means, named as the tasks'."""
    return {"covid_recall": rounded(verdict["recall"]),
            "false_alarm": rounded(verdict["false_alarm"]),
            "within_auc": rounded(verdict["within_source_auc"])}


def task_verdict(headline):
    """One sentence on what a task's model can be trusted with."""
    alarm, recall = headline["false_alarm"], headline["covid_recall"]
    if recall is None:
        return "No COVID-19 class: it sorts pneumonia, and says nothing about COVID-19."
    if alarm is None:
        return "No adults without COVID-19 were scored: its COVID-19 calls are untested."
    found = f"It finds {recall:.0%} of the test COVID-19 X-rays"
    if alarm >= 0.5:
        return (f"{found}, but calls COVID-19 in {alarm:.0%} of adults who do not have it: it"
                " tells the hospital or the age, not the disease. Do not use it on adults.")
    if alarm > 0.1:
        return (f"{found} and calls COVID-19 in {alarm:.0%} of adults who do not have it: too"
                " many false alarms to screen with.")
    return (f"{found} at {alarm:.0%} false alarms on adults without COVID-19; the holdout"
            " verdict says how such a model fares on a hospital it never saw.")
