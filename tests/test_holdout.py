"""Leave one place out: the rows each run trains and is scored on, the places (collections and
regions), the shares, the intervals, the verdict and the params' checks."""

import re

import numpy as np
import pandas as pd
import pytest

from covidxray.config.params import load_params
from covidxray.config.schema import Targets
from covidxray.errors import PipelineError
from covidxray.evaluation.holdout import (auc_interval, covid_share, rows_without_place, run_scores,
                                          verdict, wilson, within_source_rows)
from covidxray.evaluation.places import (Place, region_curve, regions, trained_regions,
                                         training_sites)
from stages import holdout as stage
from tests.conftest import make_task, params_with, write_params

CLASSES = ["normal", "pneumonia_other", "covid"]


def rows(spec):
    """A table of rows from (class, source, age group, patient[, site]) tuples; `image` numbers
    them."""
    table = pd.DataFrame([(*row, "")[:5] for row in spec],
                         columns=["class", "source", "age_group", "patient", "site"])
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
    held = rows_without_place(parts, SPEC, Place("a", "a"))
    assert "a" not in set(held["train"]["source"]) | set(held["val"]["source"])
    assert set(held["val_covid"]["patient"]) == {"a:val1"}
    assert set(held["test_covid"]["patient"]) == {"a:train1", "a:test1"}  # never used at all
    for side in ("val", "test"):  # adults without COVID-19 only: no child, no COVID-19
        assert set(held[f"{side}_alarm"]["patient"]) == {f"n:{side}", f"p:{side}"}
    every = rows_without_place(parts, SPEC, None)
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
    held = rows_without_place(split_parts(), SPEC, Place("a", "a"))
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


def test_within_place_negatives_are_adults_without_covid_of_the_place():
    table = rows([("viral", "a", "adult", "1", "Rome, Italy"), ("viral", "a", "unknown", "2"),
                  ("covid", "a", "adult", "3"), ("normal", "b", "adult", "4"),
                  ("normal", "a", "adult", "5", "Madrid, Spain")])
    assert list(within_source_rows(table, Place("a", "a"))["patient"]) == ["1", "5"]
    italy = Place("Italy", "a", ("Italy",))
    assert list(within_source_rows(table, italy)["patient"]) == ["1"]
    assert within_source_rows(table, Place("c", "c")).empty


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
    places = {"a": left(0.9, 0.05, 0.7), "b": left(0.7, 0.1), "Italy": left(0.5, 0.12, 0.1)}
    result = verdict(places, targets, {"collections": ["a", "b"], "regions": ["Italy"]})
    assert result["recall"] == pytest.approx(0.7) and result["false_alarm"] == pytest.approx(0.09)
    assert result["within_source_auc"] == 0.7  # the collections' only
    assert result["by_group"]["collections"] == pytest.approx({"recall": 0.8,
                                                               "false_alarm": 0.075})
    assert result["by_group"]["regions"] == pytest.approx({"recall": 0.5, "false_alarm": 0.12})
    assert result["met"] == {"recall": False, "false_alarm": True, "within_source_auc": False}
    only_b = verdict({"b": left(0.9, 0.2)}, targets, {"collections": ["b"], "regions": []})
    assert only_b["met"]["within_source_auc"] is None and "regions" not in only_b["by_group"]


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
    assert spec.sources == ("covid-chestxray", "hannover", "covid-chestxray-june")
    assert spec.within_source and spec.regions.source == "covid-chestxray-june"
    assert [place.name for place in regions(spec)] == [
        "Italy", "United Kingdom", "Spain", "USA", "East Asia", "elsewhere"]
    assert repo_params(tmp_path, fractions=[1, 0.25, 0.5]).holdout.fractions == (0.25, 0.5, 1.0)


def test_without_the_bank_the_stage_stops_before_reading_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no manifest, no features: the params are checked first
    write_params(features={"views": 0, "plain_view": False})
    with pytest.raises(PipelineError, match=re.escape("holdout needs the bank")):
        stage.main()
    assert not (tmp_path / "metrics").exists()


SITES = rows([("covid", "j", "adult", "j1", "Brescia, Italy"),
              ("covid", "j", "adult", "j2", "Italy"),
              ("normal", "j", "adult", "j3", "Rome, Italy"), ("covid", "j", "adult", "j4", "Spain"),
              ("covid", "j", "adult", "j5", "Tokyo, Japan"), ("covid", "j", "adult", "j6", ""),
              ("covid", "k", "adult", "k1", "Milan, Italy"), ("normal", "nih", "adult", "n1")])


def region_places(rest="elsewhere"):
    spec = repo_params_like(groups={"Italy": ("Italy",), "Spain": ("Spain",)}, rest=rest)
    return regions(spec)


def repo_params_like(groups, rest):
    """A holdout spec of collection j, its regions grouped as given."""
    from covidxray.config.schema import Holdout, Regions
    return Holdout(task="t", sources=("j", "k"), splits=1, fractions=(1.0,), within_source=None,
                   targets=None, regions=Regions(source="j", groups=groups, rest=rest))


def test_a_region_is_its_countries_of_one_collection_and_a_blank_location_is_in_none():
    italy, spain, rest = region_places()
    assert list(SITES[italy.holds(SITES)]["patient"]) == ["j1", "j2", "j3"]  # not k's Milan
    assert list(SITES[spain.holds(SITES)]["patient"]) == ["j4"]
    assert list(SITES[rest.holds(SITES)]["patient"]) == ["j5"]  # not the blank j6
    assert len(region_places(rest=None)) == 2  # no rest region: other countries never left out
    held = rows_without_place({"train": SITES, "val": SITES, "test": SITES},
                        make_task(["normal", "covid"], ["j", "k", "nih"]), italy)
    assert set(held["train"]["patient"]) == {"j4", "j5", "j6", "k1", "n1"}
    assert set(held["test_covid"]["patient"]) == {"j1", "j2"}  # of train and test sides


def test_the_region_curve_trains_on_count_other_regions_and_every_other_collection():
    italy, spain, rest = region_places()
    none = trained_regions(SITES, italy, [italy, spain, rest], 0, seed=1)
    assert set(none["patient"]) == {"k1", "n1"}  # the other collections and classes only
    two = trained_regions(SITES, italy, [italy, spain, rest], 2, seed=1)
    assert set(two["patient"]) == {"j4", "j5", "k1", "n1"}  # not the blank j6, nor Italy
    one = [set(trained_regions(SITES, italy, [italy, spain, rest], 1, seed=s)["patient"])
           for s in range(20)]
    assert {frozenset(s - {"k1", "n1"}) for s in one} == {
        frozenset({"j4"}), frozenset({"j5"})}  # seeded draws reach either region
    assert training_sites(SITES) == 6  # 5 named places of j and its blank one, k's Milan
    curve = region_curve({("Italy", 0): [{"train_sites": 2, "train_covid": 10,
                                          "test": {"recall": 0.5, "false_alarm": None}}],
                          ("Spain", 0): [{"train_sites": 4, "train_covid": 20,
                                          "test": {"recall": 0.7, "false_alarm": 0.1}}]})
    assert curve == [{"regions": 0, "train_sites": 3.0, "train_covid": 15.0,
                      "recall": pytest.approx(0.6), "false_alarm": 0.1}]


@pytest.mark.parametrize("change, message", [
    ({"regions": {"source": "covid-chestxray-june", "groups": {"A": ["Italy"], "B": ["Italy"]}}},
     "holdout.regions.groups must be regions of distinct countries (Italy is in two)"),
    ({"regions": {"source": "covid-chestxray-june", "groups": {"A": ["Italy"]}, "rest": "A"}},
     "holdout.regions.rest must be a region name other than those of `groups`, got 'A'"),
    ({"regions": {"source": "nih", "groups": {"A": ["Italy"]}}},
     "holdout.regions.source 'nih' must be one of holdout.sources"),
])
def test_bad_regions_are_named_with_the_reason(tmp_path, change, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        repo_params(tmp_path, **change)
