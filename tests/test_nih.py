"""NIH ChestX-ray14, the third source: its three layouts, its bad rows, and the per-source
scores."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covidxray.config.params import load_params
from covidxray.data.sources import nih_candidates
from covidxray.errors import PipelineError
from covidxray.evaluation import controls
from covidxray.evaluation.scoring import by_source
from stages.controls import children_rows
from tests.conftest import DELETE, NIH_HEADER, nih_row, params_with, write_image

FINDINGS = {"No Finding": "normal", "Pneumonia": "pneumonia_other"}
ADULTS = (18, 120)


def nih_layout(root, table, folder, rows):
    """A labels file named `table` and each row's image under root/<folder>/; rows are
    (name, labels, patient, age[, view]); an image named `missing*` is not written."""
    for seed, (name, *_) in enumerate(rows):
        if not name.startswith("missing"):
            write_image(root / folder / name, 300 + seed)
    (root / table).write_text(NIH_HEADER + "".join(nih_row(*row) for row in rows))
    return root


@pytest.mark.parametrize("table, folder", [
    ("Data_Entry_2017.csv", "images"),                 # this project's mirror
    ("Data_Entry_2017.csv", "images_003/images"),      # NIH's full download
    ("Data_Entry_2017_v2020.csv", "images_012/images"),  # its 2020 release
    ("sample_labels.csv", "sample/images"),            # Kaggle's nih-chest-xrays/sample
])
def test_each_nih_layout_gives_labelled_adult_rows(tmp_path, table, folder):
    root = nih_layout(tmp_path, table, folder, [
        ("00000001_000.png", "No Finding", 1, 45),
        ("00000002_001.png", "Effusion|Pneumonia", 2, 70, "AP"),
        ("00000003_000.png", "Effusion", 3, 50),       # no class of the params: not a candidate
        ("00000004_000.png", "No Finding", 4, 9),      # a child: outside the ages
        ("00000005_000.png", "Pneumonia", 5, 40, "LL"),  # a view not asked for
    ])
    skipped = []
    rows = nih_candidates(root, FINDINGS, ADULTS, ["PA", "AP"], skipped)
    assert [(Path(r["path"]).relative_to(root).as_posix(), r["class"], r["patient"],
             r["age_group"]) for r in rows] == [
        (f"{folder}/00000001_000.png", "normal", "nih:1", "adult"),
        (f"{folder}/00000002_001.png", "pneumonia_other", "nih:2", "adult")]
    assert skipped == []


def test_bad_nih_rows_are_skipped_with_their_line_and_reason(tmp_path):
    root = nih_layout(tmp_path, "Data_Entry_2017.csv", "images", [
        ("00000001_000.png", "No Finding", 1, 148),    # line 2: an upstream age mistake
        ("00000002_000.png", "No Finding", 2, "old"),  # line 3
        ("00000003_000.png", "Pneumonia|Covid", 3, 50),  # line 4: not one of NIH's labels
        ("missing_000.png", "Pneumonia", 4, 50),       # line 5: no image
        ("00000005_000.png", "No Finding", 5, "058Y"),  # line 6: NIH's older age format, kept
    ])
    skipped = []
    rows = nih_candidates(root, FINDINGS, ADULTS, ["PA"], skipped)
    table = root / "Data_Entry_2017.csv"
    assert skipped == [
        {"path": f"{table}:2", "reason": "age '148' is not a whole number of years up to 120"},
        {"path": f"{table}:3", "reason": "age 'old' is not a whole number of years up to 120"},
        {"path": f"{table}:4", "reason": "unknown label(s) Covid"},
        {"path": str(root / "images" / "missing_000.png"),
         "reason": "listed in Data_Entry_2017.csv line 5, file missing"}]
    assert [r["patient"] for r in rows] == ["nih:5"]


def test_an_image_listed_twice_keeps_its_first_row_and_records_both_lines(tmp_path):
    root = nih_layout(tmp_path, "Data_Entry_2017.csv", "images", [
        ("00000001_000.png", "No Finding", 1, 45),     # line 2: kept
        ("00000002_000.png", "Pneumonia", 2, 50),      # line 3
        ("00000001_000.png", "Pneumonia", 1, 45),      # line 4: the image of line 2 again
    ])
    skipped = []
    rows = nih_candidates(root, FINDINGS, ADULTS, ["PA"], skipped)
    assert skipped == [{"path": f"{root / 'Data_Entry_2017.csv'}:4", "reason":
                        "00000001_000.png listed twice in Data_Entry_2017.csv (lines 2 and 4)"}]
    assert [(Path(r["path"]).name, r["class"]) for r in rows] == [
        ("00000001_000.png", "normal"), ("00000002_000.png", "pneumonia_other")]


def test_labels_mapping_to_two_classes_are_a_recorded_skip(tmp_path):
    root = nih_layout(tmp_path, "sample_labels.csv", "images",
                      [("00000001_000.png", "Pneumonia|Effusion", 1, 50)])
    skipped = []
    assert nih_candidates(root, {**FINDINGS, "Effusion": "normal"}, ADULTS, ["PA"], skipped) == []
    assert skipped[0]["reason"] == ("labels Pneumonia|Effusion map to several classes"
                                    " (normal, pneumonia_other)")


def test_a_folder_without_an_nih_labels_file_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="no NIH labels file"):
        nih_candidates(tmp_path, FINDINGS, ADULTS, ["PA"], [])


def test_by_source_counts_recall_and_covid_calls_per_class_source_and_age():
    rows = pd.DataFrame({
        "class": ["normal", "normal", "normal", "pneumonia_other", "covid", "covid"],
        "source": ["kermany", "nih", "nih", "nih", "covid-chestxray", "covid-chestxray"],
        "age_group": ["child", "adult", "adult", "adult", "adult", "adult"]})
    classes = ["normal", "covid"]
    called = ["normal", "covid", "normal", "covid", "covid", "normal"]
    probs = np.array([[1.0, 0.0] if c == "normal" else [0.0, 1.0] for c in called])
    result = by_source(rows, probs, classes)
    assert result["groups"] == {
        "covid/covid-chestxray/adult": {"n": 2, "recall": 0.5, "called_covid": 0.5},
        "normal/kermany/child": {"n": 1, "recall": 1.0, "called_covid": 0.0},
        "normal/nih/adult": {"n": 2, "recall": 0.5, "called_covid": 0.5},
        "pneumonia_other/nih/adult": {"n": 1, "called_covid": 1.0}}  # outside the task: no recall
    assert result["adult_false_alarm"] == pytest.approx(2 / 3)
    assert result["adult_false_alarm_n"] == 3
    assert by_source(rows, probs[:, ::-1], ["normal", "bacterial"])["adult_false_alarm"] is None


def test_hiding_the_lungs_blacks_out_the_central_field_only():
    images = np.full((2, 20, 20, 3), 200, np.uint8)
    hidden = controls.hide_lungs(images, margin=0.25)
    assert (hidden[:, 5:15, 5:15] == 0).all()
    assert (hidden[:, :5] == 200).all() and (hidden[:, :, 15:] == 200).all()
    assert (images == 200).all()  # the originals are left alone


def test_lungs_only_crops_the_central_field_back_to_full_size():
    images = np.zeros((1, 20, 20, 3), np.uint8)
    images[:, 5:15, 5:15] = 255  # bright lungs, dark border
    cropped = controls.lungs_only(images, margin=0.25)
    assert cropped.shape == images.shape and (cropped == 255).all()


def test_lung_mass_is_the_share_of_a_heatmap_inside_the_field():
    inside, outside = np.zeros((2, 4, 4), np.float32), np.ones((4, 4), np.float32)
    inside[:, 1:3, 1:3] = 1
    inside[1] = 0
    outside[1:3, 1:3] = 0
    shares = controls.lung_mass([inside[0], outside, inside[1]], size=40, margin=0.25)
    assert shares[0] > 0.7 and shares[1] < 0.1 and shares[2] is None  # an empty map: no share


def test_the_probe_scores_report_covid_recall_and_adult_false_alarms():
    rng = np.random.default_rng(0)
    n = 40
    rows = pd.DataFrame({"label": np.arange(n) % 2, "source": "nih", "age_group": "adult"})
    rows["class"] = np.where(rows["label"] == 1, "covid", "normal")
    features = rng.normal(size=(n, 2, 2, 4)) + rows["label"].to_numpy()[:, None, None, None] * 3
    result = controls.probe_scores(features[:20], rows[:20], features[20:], rows[20:],
                                   ["normal", "covid"])
    assert result["n"] == 20 and result["accuracy"] > 0.9 and result["covid_recall"] > 0.9
    assert result["adult_false_alarm"] < 0.1


@pytest.mark.parametrize("rows, message", [
    ("a.png,normal,nih:1,nih,adult\n",
     "controls.children set 'kids' must hold children of one source; it holds 1 image(s) of"
     " age groups ['adult'] from ['nih']"),
    ("a.png,normal,nih:1,nih,child\nb.png,normal,k:2,kermany,child\n",
     "controls.children set 'kids' must hold children of one source; it holds 2 image(s) of"
     " age groups ['child'] from ['kermany', 'nih']"),
    ("", "controls.children set 'kids' must hold children of one source; it holds"
         " 0 image(s)"),
])
def test_the_age_probes_children_must_be_an_external_set_of_one_sources_children(
        tmp_path, monkeypatch, rows, message):
    monkeypatch.chdir(tmp_path)
    Path("data/external").mkdir(parents=True)
    Path("data/external/kids.csv").write_text("path,class,patient,source,age_group\n" + rows)
    with pytest.raises(PipelineError, match=re.escape(message)):
        children_rows("kids")
    Path("data/external/kids.csv").write_text("path,class,patient,source,age_group\n"
                                              "a.png,normal,nih:1,nih,child\n")
    assert list(children_rows("kids")["patient"]) == ["nih:1"]


def test_the_age_probes_children_must_name_an_external_set(tmp_path):
    with pytest.raises(PipelineError, match=re.escape(
            "params.yaml: controls.children names 'kids', which is not a set under `external`")):
        load_params(params_with(tmp_path, {"controls.children": "kids"}))
    assert load_params(params_with(tmp_path, {"controls.children": DELETE})).controls.children \
        is None
