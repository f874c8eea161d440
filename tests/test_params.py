"""params.yaml read by load_params (covidxray/config/params.py): every value checked on reading,
keys that name other keys checked against them, misspelt keys refused, the result frozen."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from covidxray.config.params import load_params
from covidxray.config.schema import CLASSES, SOURCES
from covidxray.errors import PipelineError
from covidxray.model.preflight import preflight
from tests.conftest import DELETE, ROOT, params_with

TUTORIAL = ["kermany", "covid-chestxray"]
KNOWN = (*SOURCES, "covid-chestxray-june")  # params.yaml's merge.sources adds the June collection


def refused(folder, changes, message):
    """load_params of the repo's params with `changes` fails with exactly `message`."""
    with pytest.raises(PipelineError, match=f"^{re.escape(f'params.yaml: {message}')}$"):
        load_params(params_with(folder, changes))


def test_the_repos_params_load_as_written():
    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = load_params(ROOT / "params.yaml")
    assert params.seed == written["seed"] and params.image_size == written["image_size"]
    assert list(params.tasks) == list(written["tasks"])
    for name, spec in written["tasks"].items():
        task = params.task(name)
        assert (task.name, list(task.classes), list(task.sources)) == (
            name, spec["classes"], spec["sources"])
        assert (task.epochs, task.lr, task.batch_size) == (spec["epochs"], spec["lr"],
                                                            spec["batch_size"])
        expected = {**written["head"], **spec.get("head", {})}
        assert dataclasses.asdict(task.head) == expected
    assert dataclasses.asdict(params.augment) == written["augment_presets"][written["augment"]]
    assert set(params.external) == set(written["external"])
    assert params.holdout.task == written["holdout"]["task"]
    assert params.recipe("binary").head is params.task("binary").head


def test_params_are_frozen():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.task("binary").head.units = 256


@pytest.mark.parametrize("section, message", [
    ({"crop": 0.5}, "preprocess.crop must be a number in [0, 0.5), got 0.5"),
    ({"clahe": "yes"}, "preprocess.clahe must be a number in [0, 1), got 'yes'"),
])
def test_preprocess_params_name_the_bad_key(tmp_path, section, message):
    refused(tmp_path, {"preprocess": section}, message)


def test_an_unknown_task_is_named_with_the_tasks_there_are():
    params = load_params(ROOT / "params.yaml")
    assert params.task("binary").classes == ("normal", "covid")
    with pytest.raises(PipelineError, match=re.escape(
            f"params.yaml: unknown task 'eight' (tasks: {', '.join(params.tasks)})")):
        params.task("eight")


@pytest.mark.parametrize("spec, message", [
    ({"classes": ["normal", "fungal"], "sources": TUTORIAL},
     f"tasks.odd.classes must be a list of {', '.join(CLASSES)}, got ['normal', 'fungal']"),
    ({"classes": ["covid"], "sources": TUTORIAL},
     f"tasks.odd.classes must be at least two of {', '.join(CLASSES)}, got ['covid']"),
    ({"classes": ["covid", "covid"], "sources": TUTORIAL},
     f"tasks.odd.classes must be at least two of {', '.join(CLASSES)}, got ['covid', 'covid']"),
    ({"classes": ["normal", "covid"], "sources": ["mayo"]},
     f"tasks.odd.sources must be a list of {', '.join(KNOWN)}, got ['mayo']"),
    ({"classes": ["normal", "covid"]}, "tasks.odd.sources is missing"),
])
def test_a_tasks_classes_and_sources_must_be_known_ones(tmp_path, spec, message):
    refused(tmp_path, {"tasks.odd": {**spec, "epochs": 1, "lr": 0.001, "batch_size": 4}},
            message)


@pytest.mark.parametrize("changes, message", [
    ({"tasks.odd": {"classes": ["normal", "pneumonia_other"], "sources": TUTORIAL}},
     "tasks.odd.classes: merge draws no image of pneumonia_other from tasks.odd.sources"
     " (kermany, covid-chestxray) by its per_class counts; add a source that has them, or their"
     " counts"),
    ({"tasks.odd": {"classes": ["normal", "viral", "bacterial", "covid"],
                    "sources": ["nih", "hannover"]}},
     "tasks.odd.classes: merge draws no image of viral, bacterial from tasks.odd.sources (nih,"
     " hannover) by its per_class counts; add a source that has them, or their counts"),
    ({"tasks.odd": {"classes": ["normal", "bacterial"], "sources": TUTORIAL},
      "merge.per_class.covid": 0},  # the first task that asks for it
     "tasks.binary.classes: merge draws no image of covid from tasks.binary.sources (kermany,"
     " covid-chestxray) by its per_class counts; add a source that has them, or their counts"),
])
def test_a_task_class_that_merge_draws_from_none_of_its_sources_is_refused(tmp_path, changes,
                                                                            message):
    """At check, before DVC deletes train's outputs: train found it, naming the split."""
    task = {"epochs": 1, "lr": 0.001, "batch_size": 4}
    refused(tmp_path, {**changes, "tasks.odd": {**changes["tasks.odd"], **task}}, message)


def test_a_task_class_only_a_source_of_your_own_gives_passes(tmp_path):
    spec = {"layout": "folders", "path": "data/raw/clinic", "findings": {"v": "viral"},
            "per_class": {"viral": 5}}
    params = load_params(params_with(tmp_path, {
        "merge.sources.clinic": spec, "tasks.odd": {
            "classes": ["normal", "viral"], "sources": ["nih", "clinic"], "epochs": 1,
            "lr": 0.001, "batch_size": 4}}))
    assert params.merge.drawn_classes("clinic") == {"viral"}


@pytest.mark.slow
def test_a_stage_reports_bad_params_in_one_line_without_a_traceback():
    run = subprocess.run([sys.executable, "-m", "stages.evaluate", "nosuchtask"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 1
    tasks = ", ".join(load_params(ROOT / "params.yaml").tasks)
    assert f"error: params.yaml: unknown task 'nosuchtask' (tasks: {tasks})" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("value", [-1, 1.5, True, "3", None])
def test_whole_number_params_name_the_key(tmp_path, value):
    refused(tmp_path, {"features.views": value},
            f"features.views must be a whole number >= 0, got {value!r}")


@pytest.mark.parametrize("changes, message", [
    ({"seed": "forty-two"}, "seed must be a whole number >= 0, got 'forty-two'"),
    ({"seed": -1}, "seed must be a whole number >= 0, got -1"),
    ({"image_size": 16}, "image_size must be a whole number >= 32, got 16"),
    ({"image_size": 150.5}, "image_size must be a whole number >= 32, got 150.5"),
    ({"head": DELETE}, "head is missing"),
    ({"features": [0, True]}, "features must be a mapping of keys to values, got [0, True]"),
])
def test_params_that_no_stage_could_use_are_refused_on_reading(tmp_path, changes, message):
    refused(tmp_path, changes, message)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(PipelineError, match=re.escape(
            "params.yaml: cannot read params (not a mapping of keys to values)")):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("changes, message", [
    ({"shard_sise": 512}, "shard_sise is not a known key; did you mean shard_size?"),
    ({"sead": 42}, "sead is not a known key; did you mean seed?"),
    ({"preprocess.crp": 0.1}, "preprocess.crp is not a known key; did you mean preprocess.crop?"),
    ({"tasks.binary.head": {"variance_flor": 0.01}},
     "tasks.binary.head.variance_flor is not a known key; did you mean"
     " tasks.binary.head.variance_floor?"),
    ({"augment_presets.mild.zooom": 0.1},
     "augment_presets.mild.zooom is not a known key; did you mean augment_presets.mild.zoom?"),
    ({"features.colour": "red"},
     "features.colour is not a known key; known: batch_size, dtype, plain_view, views"),
])
def test_a_misspelt_or_unknown_key_is_named_with_the_nearest_known_one(tmp_path, changes,
                                                                       message):
    """Read by nothing, it would be silently ignored: the run would use the default."""
    refused(tmp_path, changes, message)


@pytest.mark.parametrize("changes, message", [
    ({"head.poolng": "flatten", "head.pooling": DELETE},
     "head.pooling is missing (is head.poolng a misspelling of it?)"),
    ({"sead": 42, "seed": DELETE}, "seed is missing (is sead a misspelling of it?)"),
    ({"featurse": {"views": 2}, "features": DELETE},
     "features is missing (is featurse a misspelling of it?)"),
    ({"mrege": {}, "merge": DELETE}, "merge is missing (is mrege a misspelling of it?)"),
    ({"head.pooling": DELETE}, "head.pooling is missing"),
])
def test_a_misspelt_required_key_is_refused_as_missing_with_the_misspelling(tmp_path, changes,
                                                                            message):
    """A renamed section used to be a KeyError traceback from the stage that read it."""
    refused(tmp_path, changes, message)


@pytest.mark.parametrize("changes, message", [
    ({"controls.task": "nosuch"}, "controls.task names unknown task 'nosuch' (tasks: "
     + ", ".join(yaml.safe_load((ROOT / "params.yaml").read_text())["tasks"]) + ")"),
    ({"holdout.within_source": "nowhere"},
     "holdout.within_source names 'nowhere', which is not a set under `external`"),
    ({"confound.other_source": "kids"},
     "confound.other_source names 'kids', which is not a set under `external`"),
    ({"controls.children": "kids"},
     "controls.children names 'kids', which is not a set under `external`"),
    ({"features.views": 0, "features.plain_view": False, "backbone.trainable_blocks": 1,
      "backbone.fine_tune_lr": 1e-5, "backbone.fine_tune_epochs": 1},
     "backbone.trainable_blocks > 0 needs the bank (features.views > 0 or features.plain_view)"),
])
def test_keys_that_name_other_keys_must_name_existing_ones(tmp_path, changes, message):
    refused(tmp_path, changes, message)


def test_optional_cross_references_may_be_left_out(tmp_path):
    params = load_params(params_with(tmp_path, {
        "holdout.within_source": None, "confound.other_source": DELETE,
        "controls.children": DELETE, "external": DELETE}))
    assert params.external == {}
    assert (params.holdout.within_source, params.confound.other_source,
            params.controls.children) == (None, None, None)


def test_keys_that_name_sources_may_name_those_merge_sources_adds(tmp_path):
    own = {"layout": "table", "path": "data/raw/ward.csv", "findings": {"COVID-19": "covid"},
           "columns": {"path": "file", "label": "finding", "patient": "pid", "source": "site"},
           "sources": ["ward-a", "ward-b"], "per_class": {"covid": 10}}
    naming = {"split.separately": ["nih", "ward-a"], "split.test_per_class_by_source": DELETE,
              "holdout.sources": ["hannover", "ward-b"], "holdout.regions": DELETE,
              "tasks.adult_covid.sources": ["covid-chestxray", "nih", "hannover", "ward-a",
                                            "ward-b"]}
    params = load_params(params_with(tmp_path, {**naming, "merge.sources.ward": own}))
    assert params.merge.manifest_sources == (*KNOWN, "ward-a", "ward-b")
    assert params.split.separately == ("nih", "ward-a")
    assert params.task("adult_covid").sources[-2:] == ("ward-a", "ward-b")
    refused(tmp_path, naming, "split.separately must be a list of"
                              f" {', '.join(KNOWN)}, got ['nih', 'ward-a']")


@pytest.mark.parametrize("weights, message", [
    ("imagent", "backbone.weights must be imagenet, hed, none or a weights file, got 'imagent':"
                " no such file; did you mean imagenet?"),
    ("/nonexistent.h5", "backbone.weights must be imagenet, hed, none or a weights file, got"
                        " '/nonexistent.h5': no such file"),
])
def test_check_refuses_backbone_weights_that_name_no_file(tmp_path, weights, message):
    """features found these after DVC had deleted data/features; check finds them first."""
    params = load_params(params_with(tmp_path, {"backbone.weights": weights}))
    with pytest.raises(PipelineError, match=re.escape(f"params.yaml: {message}") + "$"):
        preflight(params)


def params_with_their_paths(folder):
    """The repo's params, read in `folder` (the working folder), where every path of
    merge.sources and external is made."""
    params = load_params(params_with(folder))
    for spec in [*params.merge.sources.values(), *params.external.values()]:
        spec.path.mkdir(parents=True, exist_ok=True)
    return params


def test_check_refuses_a_source_or_external_path_that_is_not_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    preflight(params_with_their_paths(tmp_path))  # the defaults' paths, all there
    for key in ("external.nih_adults.path", "merge.sources.covid-chestxray-june.path"):
        with pytest.raises(PipelineError, match=re.escape(
                f"params.yaml: {key}: data/raw/nowhere does not exist")):
            preflight(load_params(params_with(tmp_path, {key: "data/raw/nowhere"})))


def test_check_refuses_a_table_that_lacks_a_column_its_set_names(tmp_path, monkeypatch):
    """Found by check from the table's header, before DVC deletes merge's or external's outputs."""
    monkeypatch.chdir(tmp_path)
    params_with_their_paths(tmp_path)
    Path("ward.csv").write_text("file,finding\na.png,normal\n")
    ward = {"layout": "table", "path": "ward.csv", "findings": {"normal": "normal"},
            "columns": {"path": "file", "label": "finding", "patient": "pid"}}
    with pytest.raises(PipelineError, match=re.escape(
            "params.yaml: external.ward.columns: ward.csv: missing column(s) pid") + "$"):
        preflight(load_params(params_with(tmp_path, {"external.ward": ward})))
    ward["columns"]["patient"] = "file"  # one column may serve two roles
    preflight(load_params(params_with(tmp_path, {"external.ward": ward})))


def test_check_refuses_a_process_count_below_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_with_their_paths(tmp_path)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "0")
    with pytest.raises(PipelineError, match="KERAS_DISTRIBUTION_NUM_PROCESSES must be a whole"
                                            " number of at least 1, got '0'"):
        preflight(params)
