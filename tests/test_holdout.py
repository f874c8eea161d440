"""Leave one hospital out: the rows each run trains and is scored on, the shares, the intervals,
the verdict and the params' checks."""

import re

import numpy as np
import pandas as pd
import pytest

from covidxray.cli import PipelineError
from covidxray.holdout import (auc_interval, covid_share, holdout_rows, run_scores, verdict, wilson,
                               within_source_rows)
from covidxray.params import load_params
from covidxray.schema import Targets
from stages import holdout as stage
from tests.conftest import make_task, params_with, write_params

CLASSES = ["normal", "pneumonia_other", "covid"]


def rows(spec):
    """A table of rows from (class, source, age group, patient) tuples; `image` numbers them."""
    table = pd.DataFrame(spec, columns=["class", "source", "age_group", "patient"])
    return table.assign(image=range(len(table)), path=[f"{i}.png" for i in range(len(table))])


def split_parts():
    """One split: COVID-19 of hospitals a and b, NIH adults, a child; a patient a side each."""
    def side(name):
        return rows([("covid", "a", "adult", f"a:{name}1"), ("covid", "a", "adult", f"a:{name}1"),
                     ("covid", "b", "adult", f"b:{name}1"), ("normal", "nih", "adult", f"n:{name}"),
                     ("pneumonia_other", "nih", "adult", f"p:{name}"),
                     ("normal", "nih", "child", f"c:{name}")])
    parts = {name: side(name) for name in ("train", "val", "test")}
    for offset, part in enumerate(parts.values()):
        part["image"] += 10 * offset
    return parts


SPEC = make_task(CLASSES, ["a", "b", "nih"], name="adult_covid")


def test_the_left_out_source_never_trains_and_is_scored_outside_its_validation_patients():
    parts = split_parts()
    held = holdout_rows(parts, SPEC, "a")
    assert "a" not in set(held["train"]["source"]) | set(held["val"]["source"])
    assert set(held["val_covid"]["patient"]) == {"a:val1"}
    assert set(held["test_covid"]["patient"]) == {"a:train1", "a:test1"}  # never used at all
    for side in ("val", "test"):  # adults without COVID-19 only: no child, no COVID-19
        assert set(held[f"{side}_alarm"]["patient"]) == {f"n:{side}", f"p:{side}"}
    every = holdout_rows(parts, SPEC, None)
    assert set(every["train"]["source"]) == {"a", "b", "nih"}
    assert set(every["test_covid"]["patient"]) == {"a:test1", "b:test1"}


def test_a_share_of_covid_patients_is_whole_patients_per_source_and_seeded():
    table = rows([("covid", source, "adult", f"{source}:{i // 2}") for source in "ab"
                  for i in range(20)] + [("normal", "nih", "adult", f"n:{i}") for i in range(6)])
    half = covid_share(table, 0.5, seed=1)
    for source in "ab":
        covid = half[half["source"] == source]
        assert len(covid) == 10 and covid.groupby("patient").size().eq(2).all()
    assert (half["class"] == "normal").sum() == 6  # the other classes stay whole
    assert half.equals(covid_share(table, 0.5, seed=1))
    assert not half.equals(covid_share(table, 0.5, seed=2))
    assert len(covid_share(table, 0.01, seed=1)) == 6 + 2 * 2  # at least a patient a source
    assert covid_share(table, 1.0, seed=1) is table


def test_recall_false_alarms_and_the_within_source_auc_come_from_the_calls():
    held = holdout_rows(split_parts(), SPEC, "a")
    called = {"a:train1", "a:val1", "n:val"}  # what the fake model calls COVID-19

    def predict(rows):
        return np.array([[0.1, 0.1, 0.8] if p in called else [0.7, 0.2, 0.1]
                         for p in rows["patient"]])

    negatives = rows([("viral", "a", "adult", "o1"), ("normal", "a", "adult", "o2")])
    result = run_scores(predict, held, CLASSES, (np.array([[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]),
                                                 negatives))
    assert result["val"] == {"recall": 1.0, "false_alarm": 0.5}
    assert result["test"]["recall"] == 0.5 and result["test"]["false_alarm"] == 0.0  # 2 of 4
    within = result["test"]["within_source"]  # p(covid) 0.8, 0.8, 0.1, 0.1 against 0.2, 0.8
    assert within["auc"] == pytest.approx(2 * 1.5 / 8) and within["n_other"] == 2
    assert within["other_called_covid"] == 0.5 and result["train_covid"] == 1


def test_within_source_negatives_must_be_adults_without_covid_of_the_source():
    table = rows([("viral", "a", "adult", "1"), ("viral", "a", "unknown", "2"),
                  ("covid", "a", "adult", "3"), ("normal", "b", "adult", "4")])
    assert list(within_source_rows(table, "a")["patient"]) == ["1"]
    with pytest.raises(PipelineError, match="no adults without COVID-19 from c"):
        within_source_rows(table, "c")


def test_intervals_hold_the_estimate_and_narrow_with_more_images():
    small, large = wilson(0.8, 10), wilson(0.8, 1000)
    assert small[0] < large[0] < 0.8 < large[1] < small[1]
    assert wilson(None, 10) is None and wilson(0.5, 0) is None
    low, high = auc_interval(0.75, 20, 20)
    assert low < 0.75 < high and (high - low) > np.subtract(*auc_interval(0.75, 200, 200)[::-1])
    assert auc_interval(1.0, 5, 5) == [1.0, 1.0]


def test_the_verdict_averages_the_left_out_sources_and_checks_the_targets():
    def left(recall, alarm, auc=None):
        test = {"recall": {"mean": recall}, "false_alarm": {"mean": alarm}}
        return {"test": {**test, **({"within_source": {"auc": {"mean": auc}}} if auc else {})}}

    targets = Targets(recall=0.85, false_alarm=0.1, within_source_auc=0.8)
    result = verdict({"a": left(0.9, 0.05, 0.7), "b": left(0.7, 0.1)}, targets)
    assert result["recall"] == pytest.approx(0.8) and result["false_alarm"] == pytest.approx(0.075)
    assert result["met"] == {"recall": False, "false_alarm": True, "within_source_auc": False}
    assert verdict({"b": left(0.9, 0.2)}, targets)["met"]["within_source_auc"] is None


def repo_params(folder, **holdout):
    """load_params of the repo's params.yaml with these holdout keys."""
    return load_params(params_with(folder, {f"holdout.{key}": value
                                            for key, value in holdout.items()}))


@pytest.mark.parametrize("change, message", [
    ({"task": "binary_typo"}, "unknown task 'binary_typo'"),
    ({"task": "adult_pneumonia", "sources": ["hannover"]},
     "holdout.sources must list sources of task adult_pneumonia"),
    ({"sources": ["covid-chestxray", "kermany"]},
     "holdout.sources must list sources of task adult_covid (covid-chestxray, nih, hannover,"
     " covid-chestxray-june), got ['covid-chestxray', 'kermany']"),
    ({"sources": []}, "holdout.sources must be a list of kermany, covid-chestxray, nih, hannover,"
                      " covid-chestxray-june, got []"),
    ({"fractions": [0.5]}, "holdout.fractions must be a list holding 1"),
    ({"fractions": [0, 1]}, "holdout.fractions must be a list of numbers in (0, 1], got [0, 1]"),
    ({"within_source": "nowhere"},
     "holdout.within_source names 'nowhere', which is not a set under `external`"),
    ({"splits": 0}, "holdout.splits must be a whole number >= 1, got 0"),
    ({"targets": {"recall": 1.5, "false_alarm": 0.1, "within_source_auc": 0.8}},
     "holdout.targets.recall must be a number in [0, 1], got 1.5"),
])
def test_bad_holdout_params_are_named_with_the_reason(tmp_path, change, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        repo_params(tmp_path, **change)


def test_a_task_without_covid_cannot_be_left_out(tmp_path):
    with pytest.raises(PipelineError, match="holdout.task 'adult_pneumonia' has no covid class"):
        load_params(params_with(tmp_path, {
            "holdout.task": "adult_pneumonia",
            "tasks.adult_pneumonia.classes": ["normal", "pneumonia_other"]}))


def test_the_default_params_read_as_the_docs_say(tmp_path):
    spec = repo_params(tmp_path).holdout
    assert spec.task == "adult_covid" and spec.fractions[-1] == 1.0
    assert spec.sources == ("covid-chestxray", "hannover") and spec.within_source
    assert repo_params(tmp_path, fractions=[1, 0.25, 0.5]).holdout.fractions == (0.25, 0.5, 1.0)


def test_without_the_bank_the_stage_stops_before_reading_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no manifest, no features: the params are checked first
    write_params(bank={"views": 0, "plain_view": False})
    with pytest.raises(PipelineError, match=re.escape("holdout needs the bank")):
        stage.main()
    assert not (tmp_path / "metrics").exists()
