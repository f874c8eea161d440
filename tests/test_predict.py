"""The real `python -m stages.predict` in a project folder holding params.yaml and tiny models."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covidxray import model as m
from covidxray.backbone import build_backbone, build_extractor
from covidxray.head import adapt_head, build_head
from covidxray.images import load_images
from covidxray.params import load_params
from covidxray.schema import Preprocess
from tests.conftest import ROOT, write_awkward_files, write_image

pytestmark = pytest.mark.slow  # every test runs stages.predict as a process
SIZE = 32
PREPROCESSED = {"crop": 0.2, "clahe": 0.02}  # a model trained on cropped, equalised images
CLASSES = {"binary": ["normal", "covid"], "three": ["normal", "bacterial", "covid"]}
# every format and mode the sources use; scan.dat is a PNG, named explicitly on the command line
GOOD = {"a_gray.png": "L", "b_rgb.png": "RGB", "c.bmp": "RGB", "d.tif": "I;16",
        "nested/a_gray.jpeg": "L", "nested/e_rgb.JPG": "RGB", "nested/f.gif": "L",
        "nested/deeper/g.tiff": "RGB"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """params.yaml, models/{binary,three}.keras (untrained, 32 px) and good and bad images."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "params.yaml", root)
    (root / "models").mkdir()
    extractor = build_extractor(build_backbone("none", SIZE))
    layers = load_params(ROOT / "params.yaml").head.layers()  # the default head
    features = np.random.default_rng(0).uniform(0, 9, (8, *extractor.output_shape[1:]))
    for task, classes in CLASSES.items():
        head = build_head(len(classes), extractor.output_shape[1:], **layers)
        adapt_head(head, [features])
        m.build_classifier(extractor, head).save(root / "models" / f"{task}.keras")
    # as train would record a model trained with the binary classes in the other order
    shutil.copy(root / "models" / "binary.keras", root / "models" / "swapped.keras")
    (root / "models" / "swapped.json").write_text(json.dumps({"classes": ["covid", "normal"]}))
    shutil.copy(root / "models" / "binary.keras", root / "models" / "cropped.keras")
    (root / "models" / "cropped.json").write_text(json.dumps(
        {"classes": CLASSES["binary"], "preprocess": PREPROCESSED}))
    for seed, (name, mode) in enumerate(GOOD.items()):
        write_image(root / "images/good" / name, seed, mode)
    write_image(root / "images/scan.png", 99, "RGB").rename(root / "images/scan.dat")
    (root / "images/good/notes.txt").write_text("not an image, and not an image suffix")
    jpeg = write_image(root / "images/bad/corrupt.jpeg", 100, "RGB", size=(64, 64))
    jpeg.write_bytes(jpeg.read_bytes()[:len(jpeg.read_bytes()) // 2])
    (root / "images/bad/text.png").write_text("a text file named .png")
    (root / "images/empty").mkdir()
    return root


def predict(project, *args):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "stages.predict", *map(str, args)],
                          cwd=project, env=env, capture_output=True, text=True)


def records(run):
    """The JSON records on stdout: every line must be one."""
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.fixture(scope="module")
def mixed(project):
    """Unreadable files, a missing path and good images, in batches of 2 (one all bad)."""
    return predict(project, "--task", "three", "--batch-size", 2, "--csv", "out/three.csv",
                   "--gradcam", "cams", "images/bad", "images/good/nested", "missing.png")


@pytest.mark.parametrize("task", CLASSES)
def test_good_images_get_the_models_probabilities_of_the_tasks_classes(project, task):
    run = predict(project, "--task", task, "images/good", "images/scan.dat")
    assert run.returncode == 0, run.stderr
    paths = [f"images/good/{name}" for name in sorted(GOOD)] + ["images/scan.dat"]
    assert [r["path"] for r in records(run)] == paths  # notes.txt is not an image suffix
    model = m.load_classifier(project / "models" / f"{task}.keras")
    expected = m.probabilities(model, load_images([project / p for p in paths], SIZE), 4)
    for record, probs in zip(records(run), expected):
        assert list(record["probabilities"]) == CLASSES[task]
        got = np.array(list(record["probabilities"].values()))
        np.testing.assert_allclose(got, probs, atol=1.5e-6)
        assert got.sum() == pytest.approx(1, abs=1e-5)
        assert record["prediction"] == CLASSES[task][probs.argmax()]
    assert "100%" in run.stderr and "9/9" in run.stderr  # the progress bar, on stderr only


def test_images_are_preprocessed_as_the_models_record_says_not_as_params_yaml(project):
    """params.yaml says no crop and no CLAHE; the model's record says both."""
    run = predict(project, "--task", "binary", "--model", "models/cropped.keras",
                  "--gradcam", "cropped_cams", "images/good/b_rgb.png")
    assert run.returncode == 0, run.stderr
    model = m.load_classifier(project / "models" / "cropped.keras")
    image = project / "images/good/b_rgb.png"
    got = list(records(run)[0]["probabilities"].values())
    np.testing.assert_allclose(got, m.probabilities(
        model, load_images([image], SIZE, Preprocess(**PREPROCESSED)), 1)[0], atol=1.5e-6)
    assert not np.allclose(got, m.probabilities(model, load_images([image], SIZE), 1)[0],
                           atol=1e-4)
    width, height = Image.open(image).size  # the overlay covers what the model saw
    assert Image.open(project / "cropped_cams/0001_b_rgb.png").size == \
        (width - 2 * round(0.2 * width), height - 2 * round(0.2 * height))


def test_unreadable_and_missing_files_get_error_records_and_the_rest_still_run(mixed):
    assert mixed.returncode == 1
    out = {r["path"]: r for r in records(mixed)}
    assert list(out) == ["images/bad/corrupt.jpeg", "images/bad/text.png",
                         "images/good/nested/a_gray.jpeg", "images/good/nested/deeper/g.tiff",
                         "images/good/nested/e_rgb.JPG", "images/good/nested/f.gif",
                         "missing.png"]
    assert "truncated" in out["images/bad/corrupt.jpeg"]["error"]
    assert "cannot identify image file" in out["images/bad/text.png"]["error"]
    assert "No such file" in out["missing.png"]["error"]
    assert all("prediction" in r and "error" not in r for p, r in out.items() if "good" in p)
    assert "error: 3 of 7 images could not be read" in mixed.stderr
    assert "it/s" not in mixed.stderr and "Traceback" not in mixed.stderr  # 7 images: no bar


def test_every_awkward_file_gets_a_prediction_or_an_error_record(project, oversized):
    """Oversized, broken links and the rest: the good images are still predicted, in order."""
    made = write_awkward_files(project / "awkward", oversized)
    run = predict(project, "--task", "binary", "--csv", "awkward.csv", "awkward")
    out = {Path(r["path"]).name: r for r in records(run)}
    for kind, (name, is_data) in made.items():
        assert ("prediction" in out[name]) == is_data and ("error" in out[name]) != is_data, kind
    assert "too large" in out[made["oversized"][0]]["error"]
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert pd.read_csv(project / "awkward.csv")["path"].map(lambda p: Path(p).name).tolist() \
        == list(out)


def test_csv_has_the_results_as_a_table(project, mixed):
    table = pd.read_csv(project / "out/three.csv")
    assert list(table.columns) == ["path", "prediction", "p_normal", "p_bacterial", "p_covid",
                                   "error"]
    for record, row in zip(records(mixed), table.itertuples()):
        assert row.path == record["path"]
        if "error" in record:
            assert row.error == record["error"] and pd.isna(row.prediction)
        else:
            assert row.prediction == record["prediction"] and pd.isna(row.error)
            assert [row.p_normal, row.p_bacterial, row.p_covid] == \
                list(record["probabilities"].values())


def test_gradcam_writes_an_overlay_of_each_predicted_image_at_its_size(project, mixed):
    written = sorted(p.name for p in (project / "cams").iterdir())
    # numbered by output line: the two a_gray images in different folders do not clash
    assert written == ["0003_a_gray.png", "0004_g.png", "0005_e_rgb.png", "0006_f.png"]
    for name in written:
        with Image.open(project / "cams" / name) as img:
            assert img.mode == "RGB" and img.size == (40, 32)  # write_image's size


@pytest.mark.parametrize("args, message", [
    (["--task", "nosuch"], "error: params.yaml: unknown task 'nosuch'"),
    (["--task", "four"], "error: no such model file models/four.keras; train it with"),
    (["--task", "binary", "--model", "models/none.keras"], "error: no such model file"),
    (["--task", "binary", "--model", "params.yaml"], "error: params.yaml: cannot load the model"),
    (["--task", "three", "--model", "models/binary.keras"],
     "error: models/binary.keras: 1 output(s) do not fit the 3 classes"),
    (["--task", "binary", "--model", "models/swapped.keras"],
     "error: models/swapped.json: the model was trained on classes ['covid', 'normal']"),
    (["--task", "binary", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
])
def test_bad_usage_exits_2_with_a_one_line_error(project, args, message):
    run = predict(project, *args, "images/good")
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == ""


def test_no_images_at_all_is_an_error(project):
    run = predict(project, "--task", "binary", "images/empty")
    assert run.returncode == 1
    assert "error: no image files" in run.stderr and "in images/empty" in run.stderr
    assert run.stdout == ""
