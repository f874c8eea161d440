from pathlib import Path

import numpy as np
import pytest

from covidxray.config.params import load_params
from covidxray.errors import PipelineError
from covidxray.evaluation.confound import findings
from covidxray.evaluation.controls import linear_probe
from stages.confound import other_source_features
from tests.conftest import params_with


def patients_and_source(n=60):
    source = np.arange(n) % 3 == 0  # a third from the other source
    return source, np.array([f"p{i // 2}" for i in range(n)])  # two images a patient


def test_the_probe_finds_a_source_written_into_the_features_and_not_noise():
    source, patients = patients_and_source()
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(source), 2, 2, 8))
    marked = noise.copy()
    marked[source, 0, 0, 0] += 6  # one feature tells the sources apart
    found = linear_probe(marked, source, patients, folds=5, seed=0)
    blind = linear_probe(noise, source, patients, folds=5, seed=0)
    assert found["auc"] > 0.95 and found["balanced_accuracy"] > 0.9
    assert blind["auc"] < 0.75
    assert found["n"] == 60 and found["n_positive"] == 20 and found["folds"] == 5


def test_folds_shrink_to_the_patients_of_the_smaller_side():
    source, patients = patients_and_source(12)
    patients[source] = "one patient"
    assert linear_probe(np.zeros((12, 3)), source, patients, 5, 0) == {
        "n": 12, "folds": 1, "auc": None, "balanced_accuracy": None}


def test_the_summary_says_what_each_model_calls_the_other_source():
    probe = {"n": 40, "auc": 0.97}
    calls = {"binary": {"other_source": {"called_covid": 15, "n": 18},
                        "test_non_covid": {"called_covid": 1, "n": 9}}}
    lines = findings(probe, calls, "covid_other")
    assert "AUC of 0.97" in lines[0] and "plainly readable" in lines[0]
    assert lines[1] == ("binary: calls 15 of 18 covid_other images COVID-19, none of which has"
                        " it, against 1 of 9 non-COVID test images.")
    assert "hardly readable" in findings({**probe, "auc": 0.55}, {}, "x")[0]


@pytest.mark.parametrize("auc, words", [(0.9, "plainly"), (0.7, "partly"), (0.69, "hardly")])
def test_the_verdict_thresholds(auc, words):
    assert f"{words} readable" in findings({"n": 1, "auc": auc}, {}, "x")[0]


def test_an_other_source_that_is_no_such_set_or_holds_covid_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"confound.other_source names 'kids', which is not"):
        load_params(params_with(tmp_path, {"confound.other_source": "kids"}))
    Path("data/external").mkdir(parents=True)
    Path("data/external/adults.csv").write_text(
        "path,class,patient,source\na.png,viral,covid:1,covid-chestxray\n"
        "b.png,covid,covid:2,covid-chestxray\n")
    with pytest.raises(PipelineError, match=r"set 'adults' must hold no COVID-19 images"):
        other_source_features("adults")
