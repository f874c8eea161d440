import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covidxray import common
from covidxray.common import PipelineError, load_images, open_rgb, read_split, task_params
from tests.conftest import ROOT, write_image

TUTORIAL = ["kermany", "covid-chestxray"]
PARAMS = {"tasks": {"binary": {"classes": ["normal", "covid"], "sources": TUTORIAL},
                    "odd": {"classes": ["normal", "fungal"], "sources": TUTORIAL},
                    "lonely": {"classes": ["covid"], "sources": TUTORIAL},
                    "nowhere": {"classes": ["normal", "covid"], "sources": ["mayo"]},
                    "sourceless": {"classes": ["normal", "covid"]}}}


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
def test_every_image_mode_decodes_to_8_bit_rgb(tmp_path, mode):
    image = open_rgb(write_image(tmp_path / "x.png", mode=mode))
    assert image.mode == "RGB" and image.size == (40, 32)


def test_16_bit_images_are_stretched_onto_the_8_bit_range(tmp_path):
    pixels = np.asarray(open_rgb(write_image(tmp_path / "x.png", mode="I;16")))
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize("content", [b"", b"GIF89a-but-not-really", b"\xff\xd8\xff\xe0 cut"])
def test_unreadable_images_raise_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.jpeg"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=r"broken\.jpeg: not a readable image"):
        open_rgb(path)


def test_load_images_squashes_to_a_uint8_batch(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i, size=(60 + i, 30)) for i in range(3)]
    batch = load_images(paths, 16)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.uint8


def test_the_crop_cuts_each_side_before_resizing(tmp_path):
    pixels = np.full((100, 100), 255, np.uint8)
    pixels[10:90, 10:90] = 60  # a white frame, 10% of each side, round a grey field
    path = tmp_path / "framed.png"
    Image.fromarray(pixels).save(path)
    assert load_images([path], 20).max() == 255
    assert np.all(load_images([path], 20, crop=0.1) == 60)


def test_clahe_spreads_a_faint_image_over_the_grey_levels_and_stays_grey(tmp_path):
    ramp = np.tile(np.linspace(100, 140, 64).astype(np.uint8), (64, 1))
    path = tmp_path / "faint.png"
    Image.fromarray(np.stack([ramp, ramp, ramp + 5], axis=2)).save(path)  # a faint tint too
    plain, equalised = load_images([path], 64), load_images([path], 64, clahe=0.02)
    assert np.ptp(equalised) > 2 * np.ptp(plain[..., 0])
    assert np.array_equal(equalised[..., 0], equalised[..., 2])
    assert np.array_equal(equalised, load_images([path], 64, clahe=0.02))  # deterministic


def test_decoding_on_several_processes_gives_the_same_bytes_as_one(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i, size=(50 + i, 40)) for i in range(9)]
    serial = load_images(paths, 24, crop=0.05, clahe=0.01)
    assert np.array_equal(load_images(paths, 24, crop=0.05, clahe=0.01, workers=3), serial)


def test_an_unreadable_image_names_itself_from_a_worker_process(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    paths[2].write_bytes(b"not a png")
    with pytest.raises(PipelineError, match=r"2\.png: not a readable image"):
        load_images(paths, 24, workers=2)


@pytest.mark.parametrize("section, message", [
    ({"crop": 0.5}, "preprocess.crop must be a number in [0, 0.5), got 0.5"),
    ({"clahe": "yes"}, "preprocess.clahe must be a number in [0, 1), got 'yes'"),
])
def test_preprocess_params_name_the_bad_key(section, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        common.preprocess_params({"preprocess": section})


def test_task_params_rejects_unknown_tasks_classes_and_sources():
    assert task_params(PARAMS, "binary")["classes"] == ["normal", "covid"]
    with pytest.raises(PipelineError, match="unknown task 'eight'"):
        task_params(PARAMS, "eight")
    with pytest.raises(PipelineError, match=r"tasks\.odd\.classes must name"):
        task_params(PARAMS, "odd")
    with pytest.raises(PipelineError, match=r"tasks\.lonely\.classes must name at least two"):
        task_params(PARAMS, "lonely")
    for task, got in (("nowhere", "['mayo']"), ("sourceless", "None")):
        with pytest.raises(PipelineError, match=re.escape(
                f"tasks.{task}.sources must list sources of kermany, covid-chestxray, nih,"
                f" hannover; got {got}")):
            task_params(PARAMS, task)


def test_a_stage_reports_bad_params_in_one_line_without_a_traceback():
    run = subprocess.run([sys.executable, "-m", "stages.evaluate", "nosuchtask"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 1
    tasks = ", ".join(common.load_params(ROOT / "params.yaml")["tasks"])
    assert f"error: params.yaml: unknown task 'nosuchtask' (tasks: {tasks})" in run.stderr
    assert "Traceback" not in run.stderr


def write_split_tables(folder, monkeypatch, **tables):
    """data/split/<name>.csv from CSV texts, as split writes them for a (dummy) manifest."""
    monkeypatch.chdir(folder)
    common.MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    common.MANIFEST.write_text("path\na\n")
    common.write_split({name: pd.read_csv(io.StringIO(text)) for name, text in tables.items()})


def test_a_task_class_missing_from_the_split_is_a_clear_error(tmp_path, monkeypatch):
    write_split_tables(tmp_path, monkeypatch, val="path,class,patient,source\n"
                       "a.png,normal,p1,kermany\nb.png,covid,p2,covid-chestxray\nc.png,normal,p3,nih\n")
    assert read_split("val", {"classes": ["covid", "normal"],
                              "sources": TUTORIAL})["label"].tolist() == [1, 0]
    with pytest.raises(PipelineError, match=r"val\.csv: no images of class\(es\) viral"):
        read_split("val", {"classes": ["normal", "viral"], "sources": TUTORIAL})


@pytest.mark.parametrize("value", [-1, 1.5, True, "3", None])
def test_whole_number_params_name_the_key(value):
    with pytest.raises(PipelineError, match=r"params.yaml: bank.views must be a whole number >= 0"):
        common.whole_number(value, "bank.views", 0)


def test_a_tasks_rows_keep_their_manifest_row(tmp_path, monkeypatch):
    """The `image` column indexes the prepared images and features, which hold every image."""
    write_split_tables(tmp_path, monkeypatch,
                       test="image,path,class,patient,source\n7,a,normal,p1,kermany\n"
                            "3,b,viral,p2,kermany\n5,c,covid,p3,covid-chestxray\n")
    rows = read_split("test", {"classes": ["normal", "covid"], "sources": TUTORIAL})
    assert rows["image"].tolist() == [7, 5] and rows["label"].tolist() == [0, 1]


@pytest.mark.parametrize("text, message", [
    ("seed: forty-two\n", "params.yaml: seed must be a whole number >= 0, got 'forty-two'"),
    ("seed: -1\n", "params.yaml: seed must be a whole number >= 0, got -1"),
    ("- a list\n", "cannot read params (not a mapping of keys to values)"),
])
def test_params_that_no_stage_could_use_are_refused_on_reading(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(PipelineError, match=re.escape(message)):
        common.load_params(tmp_path / "params.yaml")
