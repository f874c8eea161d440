import io

import pandas as pd
import pytest

from covidxray.config.params import load_params
from covidxray.config.schema import Split
from covidxray.data.splitting import draw_split, draw_splits, read_split, split_seeds, write_split
from covidxray.errors import PipelineError
from covidxray.paths import MANIFEST
from tests.conftest import DELETE, make_task, params_with


def split(manifest, test_per_class, val_fraction, seed, separately=()):
    """draw_split with the split params given one by one."""
    return draw_split(manifest, Split(test_per_class, val_fraction, tuple(separately)), seed)


def manifest(patients_per_class=12, images_per_patient=(1, 2, 3)):
    """Rows for patients of every class, some with several images; p0 of each class also has
    an image of the next class, like a Kaggle patient with bacterial and viral images."""
    classes = ["normal", "bacterial", "viral", "covid"]
    rows = []
    for c, cls in enumerate(classes):
        for p in range(patients_per_class):
            patient = f"{cls}-p{p}"
            for i in range(images_per_patient[p % len(images_per_patient)]):
                rows.append({"path": f"{patient}-{i}", "class": cls, "patient": patient,
                             "source": "kermany"})
        rows.append({"path": f"{cls}-p0-x", "class": classes[(c + 1) % 4], "patient": f"{cls}-p0",
                     "source": "kermany"})
    return pd.DataFrame(rows)


def test_test_set_has_exactly_n_per_class_and_no_patient_crosses_sides():
    parts = split(manifest(), test_per_class=5, val_fraction=0.2, seed=1)
    assert parts["test"]["class"].value_counts().to_dict() == {
        "normal": 5, "bacterial": 5, "viral": 5, "covid": 5}
    sides = {name: set(rows["patient"]) for name, rows in parts.items()}
    assert not sides["test"] & sides["train"]
    assert not sides["test"] & sides["val"]
    assert not sides["train"] & sides["val"]
    assert sum(len(rows) for rows in parts.values()) == len(manifest())


def test_every_split_row_keeps_its_manifest_row_as_image():
    rows = manifest()
    parts = split(rows, test_per_class=5, val_fraction=0.2, seed=1)
    joined = pd.concat(parts.values())
    assert sorted(joined["image"]) == list(range(len(rows)))
    assert (rows.loc[joined["image"], "path"].to_numpy() == joined["path"].to_numpy()).all()


def test_validation_is_about_the_requested_fraction_of_the_rest():
    parts = split(manifest(patients_per_class=30), test_per_class=5, val_fraction=0.2, seed=1)
    rest = len(parts["train"]) + len(parts["val"])
    assert 0.12 < len(parts["val"]) / rest < 0.28
    assert set(parts["val"]["class"]) == {"normal", "bacterial", "viral", "covid"}


def test_the_split_is_seeded():
    first = split(manifest(), 5, 0.2, seed=3)
    again = split(manifest(), 5, 0.2, seed=3)
    other = split(manifest(), 5, 0.2, seed=4)
    assert all(first[name].equals(again[name]) for name in first)
    assert not first["test"]["path"].equals(other["test"]["path"])


def test_a_class_too_small_for_the_test_set_is_a_clear_error():
    rows = manifest()
    rows = rows[(rows["class"] != "covid") | rows["patient"].isin(["covid-p1", "covid-p2"])]
    with pytest.raises(PipelineError, match="class 'covid' has 5 image.*leaves none for training"):
        split(rows, test_per_class=5, val_fraction=0.2, seed=1)


def test_when_whole_patients_cannot_make_the_count_the_error_says_so():
    rows = pd.DataFrame([{"path": f"{c}{i}", "class": c, "patient": f"{c}-big", "source": "kermany"}
                         for c in ("normal", "covid") for i in range(6)])
    with pytest.raises(PipelineError, match="cannot make 2 test images of class 'covid'"):
        split(rows, test_per_class=2, val_fraction=0.2, seed=1)


def test_a_test_size_only_some_seeds_can_meet_is_refused_naming_the_first_that_cannot():
    """split accepted test_per_class 60 of 79 covid images with its seed, and repeat failed
    after three splits of training: every seed split, repeat and holdout use is drawn first."""
    rows, params = manifest(), Split(13, 0.2, ())
    draw_split(rows, params, 0)  # split's own seed alone would accept it
    with pytest.raises(PipelineError, match=r"cannot make 13 test images of class .* \(drawing"
                                            r" the split of seed 3; split, repeat and holdout"
                                            r" draw seeds 0 to 4\)"):
        draw_splits(rows, params, split_seeds(0, 5))
    assert len(draw_splits(rows, params, split_seeds(0, 3))) == 3


@pytest.mark.parametrize("fraction", [0.9, 0, "0.2", None])
def test_a_validation_fraction_out_of_range_is_a_clear_error(tmp_path, fraction):
    with pytest.raises(PipelineError, match=r"split\.val_fraction must be a number in \(0, 0\.5\],"
                                            rf" got {fraction!r}"):
        load_params(params_with(tmp_path, {"split.val_fraction": fraction}))


@pytest.mark.parametrize("per_class", [0, -1, 2.5])
def test_a_test_size_that_is_not_a_positive_whole_number_is_a_clear_error(tmp_path, per_class):
    with pytest.raises(PipelineError, match=r"split\.test_per_class must be a whole number >= 1,"
                                            rf" got {per_class!r}"):
        load_params(params_with(tmp_path, {"split.test_per_class": per_class}))


def test_a_source_split_separately_must_be_a_known_source(tmp_path):
    with pytest.raises(PipelineError, match=r"split\.separately must be a list of kermany,"
                                            r" covid-chestxray, nih, hannover,"
                                            r" covid-chestxray-june,"
                                            r" got \['mayo'\]"):
        load_params(params_with(tmp_path, {"split.separately": ["mayo"]}))
    assert load_params(params_with(tmp_path, {"split.separately": [],
                                              "split.test_per_class_by_source": DELETE})
                       ).split.separately == ()
    with pytest.raises(PipelineError, match=r"split\.test_per_class_by_source\.hannover is not one"
                                            r" of nih$"):
        load_params(params_with(tmp_path, {"split.separately": ["nih"],
                                           "split.test_per_class_by_source": {"hannover": 3}}))


def test_too_few_images_left_for_the_validation_folds_is_a_clear_error():
    with pytest.raises(PipelineError, match="too few for 5 validation folds"):
        split(manifest(patients_per_class=2), test_per_class=1, val_fraction=0.2, seed=1)


def other_source(source, classes, images_per_patient=(1,)):
    """12 patients of each class of a source other than the tutorial's."""
    return pd.DataFrame([{"path": f"{source}-{cls}-{p}-{i}", "class": cls,
                          "patient": f"{source}:{cls}{p}", "source": source}
                         for cls in classes for p in range(12)
                         for i in range(images_per_patient[p % len(images_per_patient)])])


def test_a_source_split_separately_leaves_the_others_split_as_it_was():
    """NIH joins the manifest; the tutorial's sources keep their train, val and test rows."""
    before = split(manifest(), test_per_class=5, val_fraction=0.2, seed=1)
    nih = other_source("nih", ("normal", "pneumonia_other"))
    after = split(pd.concat([manifest(), nih], ignore_index=True), test_per_class=5,
                  val_fraction=0.2, seed=1, separately=["nih"])
    for name, rows in after.items():
        pd.testing.assert_frame_equal(rows[rows["source"] != "nih"], before[name])
    assert after["test"].query("source == 'nih'")["class"].value_counts().to_dict() == {
        "normal": 5, "pneumonia_other": 5}
    assert not set(after["test"]["patient"]) & set(after["train"]["patient"])


def test_each_source_split_separately_leaves_the_earlier_ones_split_as_they_were():
    """Hannover (COVID-19 only, patients of several images) joins after NIH: the tutorial's
    and NIH's rows keep their sides, Hannover's test set has test_per_class images."""
    rows = pd.concat([manifest(), other_source("nih", ("normal", "pneumonia_other"))],
                     ignore_index=True)
    before = split(rows, 5, 0.2, seed=1, separately=["nih"])
    hannover = other_source("hannover", ("covid",), images_per_patient=(1, 2, 3))
    after = split(pd.concat([rows, hannover], ignore_index=True), 5, 0.2, seed=1,
                  separately=["nih", "hannover"])
    for name, part in after.items():
        pd.testing.assert_frame_equal(part[part["source"] != "hannover"], before[name])
    assert after["test"].query("source == 'hannover'")["class"].value_counts().to_dict() == {
        "covid": 5}
    sides = [set(part["patient"]) for part in after.values()]
    assert not sides[0] & sides[1] and not sides[0] & sides[2] and not sides[1] & sides[2]
    assert sum(map(len, after.values())) == len(rows) + len(hannover)


TUTORIAL = ("kermany", "covid-chestxray")


def write_split_tables(folder, monkeypatch, **tables):
    """data/split/<name>.csv from CSV texts, as split writes them for a (dummy) manifest."""
    monkeypatch.chdir(folder)
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text("path\na\n")
    write_split({name: pd.read_csv(io.StringIO(text)) for name, text in tables.items()})


def test_a_task_class_missing_from_the_split_is_a_clear_error(tmp_path, monkeypatch):
    write_split_tables(tmp_path, monkeypatch, val="path,class,patient,source\n"
                       "a.png,normal,p1,kermany\nb.png,covid,p2,covid-chestxray\n"
                       "c.png,normal,p3,nih\n")
    assert read_split("val", make_task(["covid", "normal"], TUTORIAL))["label"].tolist() == [1, 0]
    with pytest.raises(PipelineError, match=r"val\.csv: no images of class viral for task t; no"
                                            r" source gives any: check the per_class counts"):
        read_split("val", make_task(["normal", "viral"], TUTORIAL))


def test_a_task_class_only_other_sources_give_names_them_not_merges_counts(tmp_path,
                                                                            monkeypatch):
    write_split_tables(tmp_path, monkeypatch, val="path,class,patient,source\n"
                       "a.png,normal,p1,kermany\nb.png,covid,p2,covid-chestxray\n"
                       "c.png,pneumonia_other,p3,nih\nd.png,pneumonia_other,p4,june\n")
    task = make_task(["normal", "pneumonia_other", "covid"], TUTORIAL, name="adults")
    with pytest.raises(PipelineError, match=(
            r"^data/split/val\.csv: no images of class pneumonia_other for task adults;"
            r" tasks\.adults\.sources \(kermany, covid-chestxray\) give none, where june, nih do:"
            r" add one to the task's sources or leave pneumonia_other out$")):
        read_split("val", task)


def test_a_tasks_rows_keep_their_manifest_row(tmp_path, monkeypatch):
    """The `image` column indexes the prepared images and features, which hold every image."""
    write_split_tables(tmp_path, monkeypatch,
                       test="image,path,class,patient,source\n7,a,normal,p1,kermany\n"
                            "3,b,viral,p2,kermany\n5,c,covid,p3,covid-chestxray\n")
    rows = read_split("test", make_task(["normal", "covid"], TUTORIAL))
    assert rows["image"].tolist() == [7, 5] and rows["label"].tolist() == [0, 1]


def test_a_split_of_another_manifest_is_refused(tmp_path, monkeypatch):
    write_split_tables(tmp_path, monkeypatch, val="image,path,class,patient,source\n"
                       "0,a,normal,p1,kermany\n1,b,covid,p2,covid-chestxray\n")
    MANIFEST.write_text("path\nanother\n")
    with pytest.raises(PipelineError, match=r"data/split/val\.csv was made from another"
                                            r" .*manifest\.csv.*`dvc repro split`"):
        read_split("val", make_task())
