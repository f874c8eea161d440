"""evaluate <task>: score the trained model on the test split, validation and external sets.

Writes metrics/detail/<task>.json (test and validation scores, per class and per source) and
metrics/predictions/<task>.csv (one row per test image); for each external set (data/external)
metrics/detail/external/<task>/<set>.json, with the test metrics' keys plus the task's classes the
set lacks, and <set>.csv, one row per image of the set, including images of classes outside the task
(scored on the task's classes, not counted in the metrics). Then metrics/<task>.json, the headline
`dvc metrics show` prints (covidxray/evaluation/headline.py). Every input is read and scored before
the first output is written.

A model whose VGG16 was not fine-tuned is its frozen backbone and its head: its head scores the
features the features stage stored (data/features, data/external_features), so no image goes
through VGG16 again. A fine-tuned model scores the decoded images.
"""

import numpy as np

from covidxray.config.params import load_params
from covidxray.data.external import external_features, external_images, external_rows
from covidxray.data.provenance import trained_record
from covidxray.data.shards import prepared_images, read_features
from covidxray.data.splitting import read_split
from covidxray.evaluation.headline import task_headline, task_verdict
from covidxray.evaluation.scoring import by_source, predictions_table, scores, val_scores
from covidxray.files import replacing_folder, write_json, write_table
from covidxray.model.classifier import head_probabilities, load_classifier, probabilities
from covidxray.model.inputs import RowBatches
from covidxray.paths import DETAIL, EXTERNAL_METRICS, METRICS, MODELS
from covidxray.runner import cli, task_argument


class Scorer:
    """Class probabilities of a trained model on split rows and on external sets: from the
    stored features through its head when its backbone is frozen, else from the images."""

    def __init__(self, model, frozen, batch):
        self.model, self.batch = model, batch
        self.head = model.get_layer("head") if frozen else None
        self.plain = read_features()["plain"] if frozen else None

    def rows(self, rows):
        index = rows["image"].to_numpy()
        if self.head is not None:
            return head_probabilities(self.head, RowBatches(self.plain, index, self.batch),
                                      self.batch)
        return probabilities(self.model, RowBatches(prepared_images(), index, self.batch),
                             self.batch)

    def external(self, name):
        if self.head is not None:
            return head_probabilities(self.head, external_features(name), self.batch)
        return probabilities(self.model, external_images(name), self.batch)


def external_scores(scorer, name, classes):
    """One external set's metrics (only images of the task's classes count) and predictions."""
    rows = external_rows(name)
    probs = scorer.external(name) if len(rows) else np.empty((0, len(classes)))
    in_task = rows["class"].isin(classes).to_numpy()
    labels = rows.loc[in_task, "class"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    metrics = {"set": name, **(scores(labels, probs[in_task], classes) if in_task.any()
                               else {"n": 0}), "by_source": by_source(rows, probs, classes)}
    metrics["absent_classes"] = [c for c in classes if c not in set(rows["class"])]
    metrics["outside_task"] = rows.loc[~in_task, "class"].value_counts().to_dict()
    return metrics, predictions_table(rows, probs, classes)


def evaluate_external(scorer, sets, task, classes):
    """Every external set's metrics and predictions, {set: (metrics, table)}: all of them
    scored before any is written, so a damaged set leaves the old files as they were."""
    scored = {name: external_scores(scorer, name, classes) for name in sets}
    for name, (metrics, _) in scored.items():
        accuracy = f", accuracy {metrics['accuracy']:.3f}" if metrics["n"] else ""
        absent = ", ".join(metrics["absent_classes"]) or "none"
        alarm = metrics["by_source"]["adult_false_alarm"]
        alarm = "" if alarm is None else f"; adults without COVID-19 called COVID-19: {alarm:.0%}"
        print(f"evaluate {task}: external {name}: {metrics['n']} images of the task's classes"
              f"{accuracy}; classes absent: {absent}{alarm}")
    return scored


def write_external(scored, task):
    """metrics/detail/external/<task>/<set>.{json,csv}, one pair per set, replaced as a whole
    (a dropped set's files go)."""
    with replacing_folder(EXTERNAL_METRICS / task) as folder:
        for name, (metrics, table) in scored.items():
            write_json(folder / f"{name}.json", metrics)
            write_table(table, folder / f"{name}.csv")


def main(task):
    params = load_params()
    spec = params.task(task)
    classes, batch = spec.classes, spec.batch_size
    trained = trained_record(task)
    scorer = Scorer(load_classifier(MODELS / f"{task}.keras"),
                    not trained["backbone"]["trainable_blocks"], batch)
    test, val = read_split("test", spec), read_split("val", spec)
    # a batch at a time: VGG16's float32 copies of a shard's images would be a gigabyte
    test_probs, val_probs = scorer.rows(test), scorer.rows(val)
    metrics = {
        "task": task,
        "classes": classes,
        "backbone": trained["backbone"]["weights"],
        "backbone_fingerprint": trained["backbone"]["fingerprint"],
        # `auto` picks it per machine: two machines' metrics differ more when it differs
        "precision": trained["backbone"]["precision"],
        "test": {**scores(test["label"].to_numpy(), test_probs, classes),
                 "by_source": by_source(test, test_probs, classes)},
        "val": val_scores(val["label"].to_numpy(), val_probs, classes),
    }
    external = evaluate_external(scorer, params.external, task, classes)
    headline = task_headline(metrics, [found for found, _ in external.values()])
    write_external(external, task)
    write_json(DETAIL / f"{task}.json", metrics)
    write_table(predictions_table(test, test_probs, classes),
                METRICS / "predictions" / f"{task}.csv")
    write_json(METRICS / f"{task}.json", headline)
    print(f"evaluate {task}: test accuracy {headline['accuracy']:.3f} (95% CI"
          f" {headline['ci95_low']:.2f}-{headline['ci95_high']:.2f}, n={metrics['test']['n']}),"
          f" val accuracy {metrics['val']['accuracy']:.3f}; {task_verdict(headline)}")


if __name__ == "__main__":
    cli(main)(task_argument("evaluate"))
