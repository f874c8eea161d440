import json
import os

import numpy as np
import pandas as pd
import pytest

from covidxray.cli import PipelineError
from covidxray.params import load_params
from covidxray.paths import DETAIL, MANIFEST
from stages import external, merge
from tests.conftest import (NIH_HEADER, external_set, nih_row, params_with, write_image,
                            write_params)

COVID_SET = {"layout": "covid", "path": "data/raw/covid-chestxray-dataset", "modality": "X-ray",
             "views": ["AP"], "findings": {"COVID-19": "covid", "SARS": "viral"}}


@pytest.mark.parametrize("spec, message", [
    ({"layout": "dicom"},
     r"external.s.layout must be one of covid, kaggle, nih, hannover, got 'dicom'"),
    ({"layout": "kaggle"}, r"external.s.path is missing"),
    ({"layout": "kaggle", "path": "x"}, r"external.s.splits is missing"),
    ({"layout": "hannover", "path": "x"}, r"external.s.views is missing"),
    ({"layout": "hannover", "path": "x", "views": ["AP"], "ages": [0, 17]},
     r"external.s.ages is not a known key; known: layout, path, views"),
    ({**COVID_SET, "findings": {"SARS": "sars"}},
     r"external.s.findings must be a mapping of labels to classes \(normal, .*\),"
     r" got \{'SARS': 'sars'\}"),
    ("data/raw/other", r"external.s must be a mapping of keys to values, got 'data/raw/other'"),
])
def test_a_bad_set_is_named_with_the_reason(tmp_path, spec, message):
    with pytest.raises(PipelineError, match=f"^params.yaml: {message}$"):
        load_params(params_with(tmp_path, {"external.s": spec}))


def add_covid_rows(covid, rows):
    """Extra metadata.csv rows (patient, finding, view, file) with their images."""
    lines = []
    for seed, (patient, finding, view, name) in enumerate(rows, start=500):
        write_image(covid / "images" / name, seed, mode="RGB")
        lines.append(f"{patient},0,M,60,{finding},,{view},X-ray,2020,,{name}\n")
    with open(covid / "metadata.csv", "a") as f:
        f.writelines(lines)


def test_a_covid_layout_set_keeps_only_unseen_images_and_patients_and_says_why(sources):
    covid = sources["covid"]
    add_covid_rows(covid, [("20", "COVID-19", "AP", "ap-1.png"), ("21", "SARS", "AP", "sars.png"),
                           ("1", "COVID-19", "AP", "ap-of-patient-1.png"),
                           ("22", "ARDS", "AP", "ards.png")])
    (covid / "images" / "ap-copy.png").write_bytes((covid / "images" / "covid-3.png").read_bytes())
    with open(covid / "metadata.csv", "a") as f:
        f.write("23,0,M,60,COVID-19,,AP,X-ray,2020,,ap-copy.png\n")
    merge.main()
    rows, skipped = external.read_set(external_set("s", COVID_SET), pd.read_csv(MANIFEST))
    assert sorted(zip(rows["path"].str.rsplit("/", n=1).str[1], rows["class"])) == [
        ("ap-1.png", "covid"), ("sars.png", "viral")]
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in skipped}
    assert reasons["ap-of-patient-1.png"] == "patient covid:1 is in the manifest"
    assert reasons["ap-copy.png"].startswith("same bytes as manifest image")
    assert reasons["ap-view.png"] == "listed in metadata.csv line 6, file missing"
    assert "ards.png" not in reasons  # a finding the set does not map is not a candidate


def test_a_kaggle_layout_set_is_labelled_by_file_name(sources, tmp_path):
    test = tmp_path / "other" / "chest_xray" / "test"
    write_image(test / "NORMAL" / "IM-0900-0001.jpeg", 900)
    write_image(test / "PNEUMONIA" / "person900_virus_1.jpeg", 901)
    write_image(test / "PNEUMONIA" / "person1_bacteria_9.jpeg", 902)  # patient in the manifest
    merge.main()
    spec = {"layout": "kaggle", "path": str(tmp_path / "other" / "chest_xray"), "splits": ["test"]}
    rows, skipped = external.read_set(external_set("k", spec), pd.read_csv(MANIFEST))
    assert sorted(rows["class"]) == ["normal", "viral"]
    assert [s["reason"] for s in skipped] == ["patient kermany:person1 is in the manifest"]
    with pytest.raises(PipelineError,
                       match=r"train/NORMAL: missing \(external.k.splits names .train.\)"):
        external.read_set(external_set("k", {**spec, "splits": ["train"]}),
                          pd.read_csv(MANIFEST))


def test_the_stage_writes_each_sets_images_and_report(sources):
    add_covid_rows(sources["covid"], [("20", "COVID-19", "AP", "ap-1.png")])
    write_params(image_size=32,
                 external={"views": {**COVID_SET, "findings": {"COVID-19": "covid"}}})
    merge.main()
    external.main()
    rows = pd.read_csv("data/external/views.csv")
    images = np.load("data/external/views.npz")["images"]
    assert len(rows) == 1 and images.shape == (1, 32, 32, 3)
    report = json.loads((DETAIL / "data_external.json").read_text())
    assert report["views"]["classes"] == {"covid": 1} and report["views"]["n_skipped"] == 1


def test_a_set_image_under_a_folder_name_that_is_not_utf8_is_left_out_with_the_reason(sources,
                                                                                     tmp_path):
    folder, bad = tmp_path / "nih-more", os.fsdecode(b"\xff")
    image = write_image(folder / f"part{bad}" / "images" / "00000900_000.png", 900)
    write_image(folder / "images" / "00000901_000.png", 901)
    rows = [nih_row(f"0000090{i}_000.png", "No Finding", 900 + i, 40) for i in range(2)]
    (folder / "Data_Entry_2017.csv").write_text(NIH_HEADER + "".join(rows))
    merge.main()
    spec = {"layout": "nih", "path": str(folder), "findings": {"No Finding": "normal"},
            "ages": [18, 120], "views": ["PA"]}
    rows, skipped = external.read_set(external_set("n", spec), pd.read_csv(MANIFEST))
    assert list(rows["patient"]) == ["nih:901"]
    assert skipped == [{"path": str(image).replace(bad, "\\xff"),
                        "reason": "file or folder name is not valid UTF-8; rename it"}]
