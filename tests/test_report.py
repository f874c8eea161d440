"""The report: its one-line description of a trained model (models/<task>.json), and the
headline and verdict its summary opens with (covidxray/evaluation/headline.py)."""

import pytest

from covidxray.evaluation.headline import (adult_false_alarm, holdout_headline, task_headline,
                                           task_verdict)
from covidxray.evaluation.report import describe_head

HEAD = {"pooling": "flatten", "normalize": True, "units": 0, "dropout": 0.5, "l2": 0.01,
        "class_weight": "balanced", "variance_floor": 0.01}
RECORD = {"backbone": {"trainable_blocks": 0}, "preprocess": {"crop": 0.1, "clahe": 0.0},
          "epochs_kept": {"head": 3}}


@pytest.mark.parametrize("change, words", [
    ({}, "images: 10% of each side cropped; flatten pooling, standardised (variance floor 0.01),"
         " linear, dropout 0.5"),
    # the floor acts on the standardisation only: without it there is nothing to name
    ({"normalize": False}, "images: 10% of each side cropped; flatten pooling, linear, dropout"),
    ({"variance_floor": 0.0, "units": 256}, "flatten pooling, standardised, Dense(256, relu) then"
                                            " linear, dropout"),
])
def test_the_head_is_described_with_its_preprocessing_and_scaling(change, words):
    assert words in describe_head({**RECORD, "head": {**HEAD, **change}})


def side(share, n):
    return {"adult_false_alarm": share, "adult_false_alarm_n": n}


def test_false_alarms_are_pooled_over_the_scored_adults_each_counted_once():
    # 1 of 10 test adults and 45 of 90 external adults: 46 of 100, not the mean of 0.1 and 0.5
    assert adult_false_alarm([side(0.1, 10), side(0.5, 90)]) == pytest.approx(0.46)
    assert adult_false_alarm([side(None, 0), side(0.2, 5)]) == pytest.approx(0.2)
    assert adult_false_alarm([side(None, 0)]) is None


def test_a_task_headline_holds_five_rounded_numbers_for_a_narrow_metrics_table():
    test = {"accuracy": 2 / 3, "accuracy_ci95": [0.35, 0.88],
            "per_class": {"normal": {"recall": 0.5}, "covid": {"recall": 5 / 6}},
            "by_source": side(0.0, 6)}
    headline = task_headline({"test": test}, [{"by_source": side(0.25, 4)}])
    assert headline == {"accuracy": 0.6667, "ci95_low": 0.35, "ci95_high": 0.88,
                        "covid_recall": 0.8333, "false_alarm": 0.1}
    without_covid = {**test, "per_class": {"normal": {"recall": 0.5}}}
    assert task_headline({"test": without_covid}, [])["covid_recall"] is None


def test_the_holdout_headline_names_its_numbers_as_the_tasks_do():
    verdict = {"recall": 0.55123, "false_alarm": 0.1, "within_source_auc": None, "met": {}}
    assert holdout_headline(verdict) == {"covid_recall": 0.5512, "false_alarm": 0.1,
                                         "within_auc": None}


@pytest.mark.parametrize("recall, alarm, words", [
    (0.9, 0.97, "calls COVID-19 in 97% of adults who do not have it: it tells the hospital"),
    (0.9, 0.3, "too many false alarms to screen with"),
    (0.8, 0.05, "finds 80% of the test COVID-19 X-rays at 5% false alarms"),
    (None, None, "No COVID-19 class"),
    (0.8, None, "its COVID-19 calls are untested"),
])
def test_the_verdict_sentence_follows_recall_and_false_alarms(recall, alarm, words):
    assert words in task_verdict({"covid_recall": recall, "false_alarm": alarm})


def test_a_head_fitted_by_lbfgs_is_described_by_its_iterations_not_dropout():
    said = describe_head({**RECORD, "head": HEAD, "epochs_kept": {"lbfgs": 48}})
    assert said.endswith("L2 0.01, class weights balanced, fitted by L-BFGS in 48 iterations")
    assert "dropout" not in said
