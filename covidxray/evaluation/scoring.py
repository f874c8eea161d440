"""Scoring: test metrics with intervals, prediction tables, the spread over repeated splits, and
the linear reference model every trained head has to beat.
"""

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

METRIC_KEYS = ("accuracy", "auc", "loss")
CLASS_KEYS = ("precision", "recall", "f1")


def scores(labels, probs, classes):
    """Test metrics; accuracy comes with a Wilson 95% interval, as 9 images a class are few."""
    ids = list(range(len(classes)))
    # float32 outputs sum to 1 only to float32 precision; sklearn checks in float64
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1)
    correct, n = int((predicted == labels).sum()), len(labels)
    interval = binomtest(correct, n).proportion_ci(0.95, method="wilson")
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=ids, zero_division=0
    )
    if len(set(labels)) < len(classes):
        auc = None  # undefined without every class among the true labels
    elif len(classes) == 2:
        auc = roc_auc_score(labels, probs[:, 1])
    else:
        auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=ids)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": [float(interval.low), float(interval.high)],
        "loss": float(log_loss(labels, probs, labels=ids)),
        "auc": None if auc is None else float(auc),
        "per_class": {
            cls: {"precision": float(precision[i]), "recall": float(recall[i]),
                  "f1": float(f1[i]), "support": int(support[i])}
            for i, cls in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=ids).tolist(),
    }


def by_source(rows, probs, classes):
    """Scores per (class, source, age group) of the rows: how many, the share predicted as their
    own class (recall, when the class is the task's) and the share called COVID-19 (when the
    task has it). And adult_false_alarm: the share of adults without COVID-19 called COVID-19,
    the mistake a source shortcut makes; None without such images or a covid class."""
    rows = rows.assign(predicted=np.asarray(classes)[np.asarray(probs).argmax(axis=1)])
    groups = {}
    for (cls, source, age), group in rows.groupby(["class", "source", "age_group"]):
        groups[f"{cls}/{source}/{age}"] = {
            "n": len(group),
            **({"recall": float((group["predicted"] == cls).mean())} if cls in classes else {}),
            **({"called_covid": float((group["predicted"] == "covid").mean())}
               if "covid" in classes else {})}
    alarms = rows[(rows["age_group"] == "adult") & (rows["class"] != "covid")]
    return {"groups": groups, "adult_false_alarm_n": len(alarms),
            "adult_false_alarm": float((alarms["predicted"] == "covid").mean())
            if len(alarms) and "covid" in classes else None}


def predictions_table(rows, probs, classes):
    table = pd.DataFrame({
        "path": rows["path"],
        "actual": rows["class"],
        "predicted": np.asarray(classes)[probs.argmax(axis=1)],
    })
    for i, cls in enumerate(classes):
        table[f"p_{cls}"] = probs[:, i]
    return table


def accuracy(labels, probs):
    return float((np.asarray(probs).argmax(axis=1) == np.asarray(labels)).mean())


def val_scores(labels, probs, classes):
    """What a candidate is chosen by: validation accuracy and log loss."""
    probs = np.asarray(probs, dtype=np.float64)
    return {"n": len(labels), "accuracy": accuracy(labels, probs),
            "loss": float(log_loss(labels, probs / probs.sum(axis=1, keepdims=True),
                                   labels=list(range(len(classes)))))}


def reference_model(features, labels):
    """The simple probe a head has to beat: logistic regression (C=1) on standardised,
    globally average-pooled plain features. It takes them unpooled, or pooled already (pooling
    N x channels changes nothing), which holds 2 KiB an image instead of the whole map."""
    probe = make_pipeline(FunctionTransformer(mean_pooled), StandardScaler(),
                          LogisticRegression(max_iter=5000))
    return probe.fit(features, labels)


def mean_pooled(features):
    """N x channels: the mean over the feature map's positions."""
    return features.reshape(len(features), -1, features.shape[-1]).mean(axis=1)


def spread(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1
            else 0.0, "min": float(values.min()), "max": float(values.max()),
            "values": values.round(6).tolist()}


def split_spread(results):
    """Spread over the splits of each test metric, of each class's, of each source group's (see
    by_source) and of the validation's."""
    classes = results[0]["test"]["per_class"]
    return {"test": {**{key: spread([r["test"][key] for r in results]) for key in METRIC_KEYS},
                     "per_class": {cls: {key: spread([r["test"]["per_class"][cls][key]
                                                      for r in results]) for key in CLASS_KEYS}
                                   for cls in classes},
                     "by_source": source_spread([r["test"]["by_source"] for r in results])},
            "val": {**{key: spread([r["val"][key] for r in results])
                       for key in ("accuracy", "loss")},
                    "by_source": source_spread([r["val"]["by_source"] for r in results])}}


def source_spread(results):
    """Spread over the splits of by_source's shares, for the groups every split has."""
    groups = set.intersection(*(set(r["groups"]) for r in results))
    alarms = [r["adult_false_alarm"] for r in results if r["adult_false_alarm"] is not None]
    return {"adult_false_alarm": spread(alarms) if alarms else None,
            "groups": {group: {key: spread([r["groups"][group][key] for r in results])
                               for key in results[0]["groups"][group] if key != "n"}
                       for group in sorted(groups)}}
