"""The 2020-06-22 snapshot of ieee8023's collection: read by the covid layout's one reader in its
later schema, a training source of its own (merge.sources), split on its own."""

import json
from pathlib import Path

import pandas as pd
import pytest

from covidxray.config.params import load_params
from covidxray.data.sources import covid_candidates
from covidxray.errors import PipelineError
from covidxray.paths import DETAIL, MANIFEST, SPLIT_DIR
from stages import merge, split
from tests.conftest import (METADATA_HEADER, ROOT, june_layout, params_with, write_image,
                            write_params)

JUNE = Path("data/raw/covid-chestxray-dataset-2020-06-22")
ROWS = [  # patientid, finding, view, location, filename, age
    ("300", "COVID-19", "PA", "Brescia, Italy", "a.jpg", "61"),            # line 2: kept
    ("300", "COVID-19, ARDS", "AP Supine", "Brescia, Italy", "b.jpg", "61"),  # 3: kept
    ("301", "todo", "PA", "United Kingdom", "c.jpg", "40"),                # 4: not labelled yet
    ("302", "Pneumonia", "PA", "Portugal", "d.jpg", ""),                   # 5: kept, age blank
    ("303", "Pneumonia", "PA", "Portugal", "d.jpg", "70"),                 # 6: listed twice
    ("304", "No Finding", "L", "Spain", "e.jpg", "30"),                    # 7: a lateral view
    ("305", "Aspergillosis", "PA", "Spain", "f.jpg", "30"),                # 8: not a finding asked
    ("306", "COVID-19", "AP", "", "g.jpg", "55"),                          # 9: kept, no location
    ("307", "COVID-19", "PA", "Tokyo, Japan", "missing.jpg", "55"),        # 10: no file
]


def june_filter():
    """The params.yaml filter of the June set."""
    with_params = load_params(ROOT / "params.yaml")
    return with_params.merge.sources["covid-chestxray-june"].filter


def test_the_later_schema_is_read_by_the_covid_reader_with_every_row_accounted_for(tmp_path):
    root = june_layout(tmp_path, ROWS)
    skipped = []
    rows = covid_candidates(root, june_filter(), skipped)
    table = root / "metadata.csv"
    assert [(r["path"].rsplit("/", 1)[1], r["class"], r["patient"], r["age_group"], r["site"])
            for r in rows] == [
        ("a.jpg", "covid", "covid:300", "adult", "Brescia, Italy"),
        ("b.jpg", "covid", "covid:300", "adult", "Brescia, Italy"),
        ("d.jpg", "pneumonia_other", "covid:302", "unknown", "Portugal"),
        ("g.jpg", "covid", "covid:306", "adult", "")]
    assert {r["source"] for r in rows} == {"covid-chestxray-june"}
    assert skipped == [
        {"path": f"{table}:4", "reason": "finding 'todo': not labelled upstream yet"},
        {"path": f"{table}:6", "reason": "d.jpg listed twice in metadata.csv (lines 5 and 6)"},
        {"path": str(root / "images" / "missing.jpg"),
         "reason": "listed in metadata.csv line 10, file missing"}]


def test_the_first_schema_still_reads_with_its_location_as_the_site(tmp_path):
    write_image(tmp_path / "images" / "x.png", 1)
    (tmp_path / "metadata.csv").write_text(
        METADATA_HEADER + '5,0,M,60,COVID-19,,PA,X-ray,2020,"Padova, Italy",x.png\n')
    spec = load_params(ROOT / "params.yaml").merge.covid
    rows = covid_candidates(tmp_path, spec, [])
    assert [(r["patient"], r["source"], r["site"]) for r in rows] == [
        ("covid:5", "covid-chestxray", "Padova, Italy")]


def test_a_metadata_csv_with_neither_patient_column_is_a_clear_error(tmp_path):
    root = june_layout(tmp_path, ROWS[:1])
    table = root / "metadata.csv"
    table.write_text(table.read_text().replace("patientid", "patient", 1))
    with pytest.raises(PipelineError, match=r"metadata\.csv: missing column\(s\) Patientid or"
                                            r" patientid"):
        covid_candidates(root, june_filter(), [])


def test_a_covid_layout_training_set_must_name_a_source_of_its_own(tmp_path):
    with pytest.raises(PipelineError, match="names source 'covid-chestxray', which merge.covid"
                                            " already reads"):
        load_params(params_with(tmp_path, {
            "merge.sources.covid-chestxray-june.source": "covid-chestxray"}))


def test_the_june_rows_come_last_are_split_on_their_own_and_leave_the_rest_as_it_was(sources):
    write_params(merge={"per_class": {"normal": 4, "bacterial": 4, "viral": 4, "covid": 4}},
                 split={"test_per_class": 1, "val_fraction": 0.5,
                        "separately": ["nih", "hannover", "covid-chestxray-june"],
                        "test_per_class_by_source": {"covid-chestxray-june": 3}})
    merge.main()
    split.main()
    before = {name: pd.read_csv(SPLIT_DIR / f"{name}.csv") for name in ("train", "val", "test")}
    june_layout(JUNE, [(str(400 + i), finding, "PA", "Rome, Italy", f"j{i}.jpg", "50")
                       for i, finding in enumerate(["COVID-19"] * 8 + ["No Finding"] * 8)])
    merge.main()
    split.main()
    manifest = pd.read_csv(MANIFEST, keep_default_na=False)
    assert list(manifest["source"].iloc[-16:]) == ["covid-chestxray-june"] * 16
    assert set(manifest["site"].iloc[-16:]) == {"Rome, Italy"}
    report = json.loads((DETAIL / "data.json").read_text())
    assert report["covid-chestxray-june"]["covid"] == {"available": 8, "requested": 246,
                                                      "selected": 8}
    for name, rows in before.items():
        after = pd.read_csv(SPLIT_DIR / f"{name}.csv").drop(columns="site")
        others = after[after["source"] != "covid-chestxray-june"].reset_index(drop=True)
        assert others.equals(rows.drop(columns="site"))
    test = pd.read_csv(SPLIT_DIR / "test.csv")
    june = test[test["source"] == "covid-chestxray-june"]
    assert june["class"].value_counts().to_dict() == {"covid": 3, "normal": 3}  # its own count
