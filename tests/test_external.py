import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covidxray.config.params import load_params
from covidxray.errors import PipelineError
from covidxray.paths import DETAIL, MANIFEST
from stages import external, merge
from tests.conftest import (NIH_HEADER, external_set, nih_row, params_with, write_awkward_files,
                            write_image, write_params)
from tests.test_bad_input import check_kept_or_reasoned

COVID_SET = {"layout": "covid", "path": "data/raw/covid-chestxray-dataset", "modality": "X-ray",
             "views": ["AP"], "findings": {"COVID-19": "covid", "SARS": "viral"}}
OWN = Path("data/raw/own")  # a set of your own, under data/raw as docs/data.md asks
FOLDERS_SET = {"layout": "folders", "path": str(OWN), "patient": r"^(p\d+)_",
               "findings": {"NORMAL": "normal", "COVID": "covid"}}
TABLE_SET = {"layout": "table", "path": str(OWN / "labels.csv"),
             "columns": {"path": "file", "label": "finding", "patient": "pid"},
             "findings": {"COVID-19": "covid", "healthy": "normal"}}


@pytest.mark.parametrize("spec, message", [
    ({"layout": "dicom"},
     r"external.s.layout must be one of covid, kaggle, nih, hannover, folders, table,"
     r" got 'dicom'"),
    ({"layout": "kaggle"}, r"external.s.path is missing"),
    ({"layout": "kaggle", "path": "x"}, r"external.s.splits is missing"),
    ({"layout": "hannover", "path": "x"}, r"external.s.views is missing"),
    ({"layout": "hannover", "path": "x", "views": ["AP"], "ages": [0, 17]},
     r"external.s.ages is not a known key; known: layout, path, views"),
    ({**COVID_SET, "findings": {"SARS": "sars"}},
     r"external.s.findings must be a mapping of labels to classes \(normal, .*\),"
     r" got \{'SARS': 'sars'\}"),
    ("data/raw/other", r"external.s must be a mapping of keys to values, got 'data/raw/other'"),
    ({**FOLDERS_SET, "patient": "(p"}, r"external.s.patient must be a regular expression"
     r" \(missing \), unterminated subpattern at position 0\), got '\(p'"),
    ({**FOLDERS_SET, "patient": r"p\d+"}, r"external.s.patient must be a regular expression with"
     r" exactly one group, the patient id \(e.g. '\^\(\\w\+\?\)_'\), got 'p\\\\d\+'"),
    ({**FOLDERS_SET, "age_group": "old"},
     r"external.s.age_group must be one of adult, child, unknown, got 'old'"),
    ({**TABLE_SET, "columns": {"path": "file", "label": "finding"}},
     r"external.s.columns.patient is missing"),
    ({**TABLE_SET, "columns": {**TABLE_SET["columns"], "source": "site"}},
     r"external.s.sources is missing"),
    ({**TABLE_SET, "columns": {**TABLE_SET["columns"], "source": "site"}, "sources": ["a"],
      "source": "a"}, r"external.s.source is not a known key; did you mean external.s.sources\?"),
    ({**TABLE_SET, "columns": {**TABLE_SET["columns"], "age": "age"}, "age_group": "adult"},
     r"external.s.age_group is not a known key; known: .*"),
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


def test_a_set_with_no_image_to_score_is_written_and_warned_of(sources, capsys):
    """Empty class folders: a valid set, written empty, not silent ("0 images")."""
    for folder in FOLDERS_SET["findings"]:
        (OWN / folder).mkdir(parents=True)
    write_params(image_size=32, external={"own": FOLDERS_SET})
    merge.main()
    external.main()
    assert len(pd.read_csv("data/external/own.csv")) == 0
    assert ("warning: external: own: no image to score (0 left out): every task's scores on it"
            " will be empty; check external.own's path and filters") in capsys.readouterr().err


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


def test_a_folders_set_takes_its_named_folders_and_the_patient_from_the_file_name(sources):
    for seed, (folder, name) in enumerate([("NORMAL", "p1_a.png"), ("NORMAL", "p1_b.png"),
                                           ("COVID", "p2_a.png"), ("OTHER", "p3_a.png"),
                                           ("COVID", "scan.png"), ("COVID", "sub/p4_a.png")]):
        write_image(OWN / folder / name, 800 + seed)
    copy = OWN / "COVID" / "p5_a.jpeg"  # the bytes of a manifest image
    copy.write_bytes((sources["kermany"] / "NORMAL" / "IM-0100-0001.jpeg").read_bytes())
    merge.main()
    rows, skipped = external.read_set(external_set("own", FOLDERS_SET), pd.read_csv(MANIFEST))
    assert rows.to_dict("records") == [
        {"path": str(OWN / folder / name), "class": cls, "patient": patient, "source": "own",
         "age_group": "unknown", "site": ""}
        for folder, name, cls, patient in (("NORMAL", "p1_a.png", "normal", "own:p1"),
                                           ("NORMAL", "p1_b.png", "normal", "own:p1"),
                                           ("COVID", "p2_a.png", "covid", "own:p2"))]
    assert skipped == [
        {"path": str(OWN / "COVID" / "scan.png"),
         "reason": r"file name gives no patient (no match for external.own.patient ^(p\d+)_)"},
        {"path": str(OWN / "COVID" / "sub"), "reason": "a folder, not an image"},
        {"path": str(copy), "reason": "same bytes as manifest image"
                                      f" {sources['kermany'] / 'NORMAL' / 'IM-0100-0001.jpeg'}"}]
    # without `patient` each image is its own patient; `source` and `age_group` for every row
    spec = {**FOLDERS_SET, "patient": None, "source": "clinic", "age_group": "adult"}
    rows, _ = external.read_set(external_set("own", spec), pd.read_csv(MANIFEST))
    assert list(rows["patient"]) == ["clinic:NORMAL/p1_a.png", "clinic:NORMAL/p1_b.png",
                                     "clinic:COVID/p2_a.png", "clinic:COVID/scan.png"]
    assert set(rows["source"]) == {"clinic"} and set(rows["age_group"]) == {"adult"}
    with pytest.raises(PipelineError, match=r"^data/raw/own/VIRAL: missing"
                                            r" \(external.own.findings names 'VIRAL'\)$"):
        external.read_set(external_set("own", {**FOLDERS_SET, "findings": {"VIRAL": "viral"}}),
                          pd.read_csv(MANIFEST))


def test_a_table_set_reads_its_columns_and_leaves_out_bad_rows_with_line_and_reason(sources):
    for seed, name in enumerate(["img/a.png", "img/b.png", "c.png"]):
        write_image(OWN / name, 810 + seed)
    table = OWN / "labels.csv"
    table.write_bytes(b"file,finding,pid,age,site\n"
                      b"img/a.png,COVID-19,7,64,x\n"       # 2: kept, an adult
                      b"img/b.png,healthy,8,,y\n"          # 3: kept, age unknown
                      b"c.png,pneumonia,9,30,x\n"          # 4: another label, not a candidate
                      b"img/gone.png,COVID-19,10,50,x\n"   # 5: no such file
                      b",COVID-19,11,50,x\n"               # 6: no file named
                      b"img/a.png,,12,50,x\n"              # 7: no label
                      b"c.png,healthy,,9,x\n"              # 8: no patient
                      b"../c.png,healthy,13,9,x\n"         # 9: outside the images' folder
                      b"c.png,healthy\n"                   # 10: two fields
                      b"c.png,healthy,14,9,\xff\n"         # 11: not UTF-8
                      b"c.png,healthy,1,9,\n")             # 12: kept, a child of no site
    merge.main()
    spec = {**TABLE_SET, "columns": {**TABLE_SET["columns"], "age": "age"}}
    rows, skipped = external.read_set(external_set("own", spec), pd.read_csv(MANIFEST))
    assert rows.to_dict("records") == [
        {"path": str(OWN / name), "class": cls, "patient": patient, "source": "own",
         "age_group": age, "site": ""}
        for name, cls, patient, age in (("img/a.png", "covid", "own:7", "adult"),
                                        ("img/b.png", "normal", "own:8", "unknown"),
                                        ("c.png", "normal", "own:1", "child"))]
    assert skipped == [{"path": f"{table}:10", "reason": "2 field(s), the header has 5"},
                       {"path": f"{table}:11", "reason": "not valid UTF-8"},
                       {"path": str(OWN / "img" / "gone.png"),
                        "reason": "listed in labels.csv line 5, file missing"},
                       {"path": f"{table}:6", "reason": "no file"},
                       {"path": f"{table}:7", "reason": "no finding"},
                       {"path": f"{table}:8", "reason": "no pid"},
                       {"path": f"{table}:9", "reason": "file '../c.png' is not a path inside"
                                                        " data/raw/own"}]
    # a source column: each row's own source, of those `sources` keeps; the table elsewhere
    elsewhere = Path("data/raw/own-labels.csv")
    elsewhere.write_bytes(table.read_bytes())
    spec = {**TABLE_SET, "path": str(elsewhere), "images": str(OWN),
            "columns": {**TABLE_SET["columns"], "source": "site"}, "sources": ["x", "y"]}
    rows, skipped = external.read_set(external_set("own", spec), pd.read_csv(MANIFEST))
    assert list(zip(rows["patient"], rows["source"])) == [("x:7", "x"), ("y:8", "y")]
    assert {"path": f"{elsewhere}:12", "reason": "no site"} in skipped


@pytest.mark.parametrize("layout", ["folders", "table"])
def test_a_set_of_your_own_keeps_or_reports_every_awkward_file(sources, oversized, layout):
    made = write_awkward_files(OWN / "COVID", oversized)
    (OWN / "labels.csv").write_text("file,finding,pid\n" + "".join(
        f"COVID/{name},COVID-19,p{i}\n" for i, (name, _) in enumerate(made.values())))
    spec = {"folders": {**FOLDERS_SET, "patient": None, "findings": {"COVID": "covid"}},
            "table": TABLE_SET}[layout]
    merge.main()
    rows, skipped = external.read_set(external_set("own", spec), pd.read_csv(MANIFEST))
    check_kept_or_reasoned(made, set(rows["path"].map(lambda p: Path(p).name)),
                           {Path(s["path"]).name: s["reason"] for s in skipped})
