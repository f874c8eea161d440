"""The real `covidxray predict` in a project folder holding params.yaml and tiny models."""

import functools
import json
import os
import shutil
import re
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covidxray.config.schema import Preprocess
from covidxray.data.images import load_images
from covidxray.errors import PipelineError
from covidxray.model import classifier as m
from tests.conftest import (COVIDXRAY, ROOT, predict, records, write_awkward_files, write_image,
                            write_tiny_models)

pytestmark = pytest.mark.slow  # every test runs `covidxray predict` as a process
SIZE = 32
PREPROCESSED = {"crop": 0.2, "clahe": 0.02}  # a model trained on cropped, equalised images
CLASSES = {"binary": ["normal", "covid"], "three": ["normal", "bacterial", "covid"]}
# every format and mode the sources use; scan.dat is a PNG, named explicitly on the command line
GOOD = {"a_gray.png": "L", "b_rgb.png": "RGB", "c.bmp": "RGB", "d.tif": "I;16",
        "nested/a_gray.jpeg": "L", "nested/e_rgb.JPG": "RGB", "nested/f.gif": "L",
        "nested/deeper/g.tiff": "RGB"}
# a user without root's capabilities, to whom a folder's mode applies (tests run as root)
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """params.yaml, models/{binary,three}.keras (untrained, 32 px) with three's record as train
    writes it, a 5-output model that fits no task, and good and bad images."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "params.yaml", root)
    write_tiny_models(root / "models", CLASSES, SIZE)
    (root / "models" / "three.json").write_text(json.dumps({"task": "three",
                                                            "classes": CLASSES["three"]}))
    keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(5, activation="softmax")]).save(root / "models/five.keras")
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


@pytest.fixture(scope="module")
def mixed(project):
    """Unreadable files, a missing path and good images, in batches of 2 (one all bad)."""
    return predict(project, "--task", "three", "--batch-size", 2, "--csv", "out/three.csv",
                   "--gradcam", "cams", "--recursive", "images/bad", "images/good/nested",
                   "missing.png")


@pytest.mark.parametrize("task", CLASSES)
def test_good_images_get_the_models_probabilities_of_the_tasks_classes(project, task):
    run = predict(project, "--task", task, "--recursive", "images/good", "images/scan.dat")
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
    plain = m.probabilities(model, load_images([image], SIZE), 1)[0]
    # far beyond the match above: the untrained model saturates, so 1e-4 was luck (CI missed it)
    assert np.abs(np.subtract(got, plain)).max() > 1e-5
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
                                   "unreliable", "error"]
    for record, row in zip(records(mixed), table.itertuples()):
        assert row.path == record["path"]
        if "error" in record:
            assert row.error == record["error"] and pd.isna(row.prediction)
        else:
            assert row.prediction == record["prediction"] and pd.isna(row.error)
            assert [row.p_normal, row.p_bacterial, row.p_covid] == \
                list(record["probabilities"].values())


def test_without_the_ood_reference_every_image_is_predicted_after_one_warning(mixed):
    """Four batches, one warning: the images were not checked, and how to check them."""
    assert mixed.stderr.count("warning:") == 1
    assert ("warning: models/ood.npz is missing, so no input is checked for looking like a"
            " frontal chest X-ray: noise or a photo gets a class like an X-ray; build it with"
            " `dvc repro ood`") in mixed.stderr
    assert all("unreliable" not in r for r in records(mixed))
    assert "flagged unreliable" not in mixed.stderr


def xray_like(folder, count):
    """Smooth grey images, a bright oval on a dark ground, each moved and sized a little: what
    the tiny reference's training and validation images look like."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:64, :64] / 64
    paths = []
    for i in range(count):
        cy, cx, ry, rx = rng.uniform([0.45, 0.4, 0.25, 0.2], [0.55, 0.6, 0.35, 0.3])
        oval = np.exp(-((y - cy) / ry) ** 2 - ((x - cx) / rx) ** 2)
        paths.append(folder / f"{i:02d}.png")
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.uint8(40 + 180 * oval)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def checked(project, tmp_path_factory):
    """A project with models/ood.npz built by the library on X-ray-like images (k 3, the
    threshold the largest validation distance), the binary model elsewhere, a 300 px grey noise
    image (the issue's) and a validation image."""
    from covidxray.config.schema import Backbone, Ood
    from covidxray.evaluation import ood
    from covidxray.model.backbone import fingerprint
    from covidxray.model.features import build_features_model, plain_features

    root = tmp_path_factory.mktemp("checked")
    shutil.copy(project / "params.yaml", root)
    shutil.copy(project / "models/binary.keras", root / "elsewhere.keras")
    paths = xray_like(root / "reference", 16)
    backbone = Backbone("hed", "float32")
    extractor = build_features_model(backbone, SIZE)
    vectors = ood.cell_directions(plain_features(extractor, load_images(paths, SIZE), 8))
    (root / "models").mkdir()
    ood.write_reference(ood.fit(vectors[:12], vectors[12:], Ood(3, 1.0, 1), backbone=backbone,
                                size=SIZE, preprocess=Preprocess(),
                                fingerprint=fingerprint(extractor)), root / "models/ood.npz")
    write_image(root / "noise.png", 11, "L", size=(300, 300))
    return root


def test_noise_gets_no_class_but_unreliable_with_why_and_the_summary_counts_it(checked):
    """With --model FILE too the reference is models/ood.npz; the probabilities stay."""
    run = predict(checked, "--task", "binary", "--model", "elsewhere.keras", "--csv", "out.csv",
                  "noise.png", "reference/13.png")
    assert run.returncode == 0, run.stderr
    noise, xray = records(run)
    assert noise["prediction"] is None and set(noise["probabilities"]) == {"normal", "covid"}
    assert re.fullmatch(r"does not look like a frontal chest X-ray: distance \d\.\d{3} above the"
                        r" threshold \d\.\d{3} set on validation", noise["unreliable"])
    assert xray["prediction"] in ("normal", "covid") and "unreliable" not in xray
    # the summary alone: TensorFlow's native info lines (written before it reads
    # TF_CPP_MIN_LOG_LEVEL) are left out, and no warning is given
    assert run.stderr.splitlines() == [
        "predict: 2 image(s) tried, 1 predicted, 0 failed, 1 flagged unreliable (no class)"]
    table = pd.read_csv(checked / "out.csv")
    assert table["unreliable"].tolist()[0] == noise["unreliable"]
    assert pd.isna(table["prediction"][0]) and pd.isna(table["unreliable"][1])


def test_a_damaged_ood_reference_is_a_one_line_error(checked, tmp_path):
    shutil.copy(checked / "params.yaml", tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/ood.npz").write_bytes((checked / "models/ood.npz").read_bytes()[:200])
    run = predict(tmp_path, "--task", "binary", "--model", checked / "elsewhere.keras",
                  checked / "noise.png")
    assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr
    assert re.search(r"^error: models/ood.npz: cannot read \(.*\); run `dvc repro ood` to"
                     r" rebuild it$", run.stderr, re.M), run.stderr


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
     "error: models/binary.keras: 1 output(s) do not fit the 3 classes of params.yaml"
     " tasks.three.classes (normal, bacterial, covid); without its record models/binary.json"
     " (train writes it beside the model) its classes are unknown; tasks of params.yaml with as"
     " many outputs: binary, binary_mixed"),
    (["--task", "binary", "--model", "models/five.keras"],
     "error: models/five.keras: 5 output(s) do not fit the 2 classes of params.yaml"
     " tasks.binary.classes (normal, covid); without its record models/five.json (train"
     " writes it beside the model) its classes are unknown; no task of params.yaml has as many"
     " outputs"),
    # three's record names its task, the one to use
    (["--task", "binary", "--model", "models/three.keras"],
     "error: models/three.json: the model was trained on classes ['normal', 'bacterial', 'covid'],"
     " params.yaml tasks.binary.classes are ['normal', 'covid']; use --task three\n"),
    (["--task", "binary", "--model", "models/swapped.keras"],
     "error: models/swapped.json: the model was trained on classes ['covid', 'normal'],"
     " params.yaml tasks.binary.classes are ['normal', 'covid']; no task of params.yaml has those"
     " classes now; retrain it with `dvc repro train@binary`"),
    (["--task", "binary", "--batch-size", "0"], "--batch-size: must be 1 to 1024, got 0"),
    (["--task", "binary", "--batch-size", "1000000000"],
     "--batch-size: must be 1 to 1024, got 1000000000"),
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


def test_a_truncated_model_file_says_so_and_how_to_get_it_back(project, tmp_path):
    """Keras itself calls a .keras file that is not a whole zip archive "File not found"."""
    shutil.copy(project / "params.yaml", tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/binary.keras").write_bytes(
        (project / "models/binary.keras").read_bytes()[:1000])
    run = predict(tmp_path, "--task", "binary", project / "images/good")
    assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr
    assert run.stderr.endswith(
        "error: models/binary.keras: cannot load the model, not a readable .keras model (not a"
        " whole zip archive; damaged or truncated?); restore it with `dvc checkout --force"
        " models/binary.keras` (plain `dvc checkout` leaves a modified file as it is) or rebuild"
        " it with `dvc repro train@binary`\n")


def damaged_config(data):
    """A whole .keras zip whose config.json no longer matches its checksum."""
    at = data.index(b'"class_name"')  # config.json comes before the weights
    return data[:at] + b'"class_nane"' + data[at + len(b'"class_name"'):]


@pytest.mark.parametrize("damage, path, message", [
    (damaged_config, "models/binary.keras",
     r"models/binary\.keras: cannot load the model, not a readable \.keras model \(Bad CRC-32 for"
     r" file 'config\.json'; damaged or truncated\?\); restore it with `dvc checkout --force"),
    (lambda data: data[:1000], "mine.keras",
     r"mine\.keras: cannot load the model, not a readable \.keras model \(not a whole zip"
     r" archive; damaged or truncated\?\); replace it with a whole copy$"),
])
def test_a_damaged_model_file_is_a_clear_error(project, tmp_path, monkeypatch, damage, path,
                                              message):
    """Only a file where train writes models is restored with dvc."""
    monkeypatch.chdir(tmp_path)
    Path(path).parent.mkdir(exist_ok=True)
    Path(path).write_bytes(damage((project / "models/binary.keras").read_bytes()))
    with pytest.raises(PipelineError, match=message):
        m.load_classifier(path)


def test_a_file_name_that_is_not_utf8_is_predicted_with_its_bytes_kept(project):
    """The JSON line escapes the byte as Python does (os.fsencode gives it back), the CSV row
    holds the byte itself."""
    write_image(project / "latin1" / os.fsdecode(b"a\xff.jpeg"), 5, "RGB")
    run = predict(project, "--task", "binary", "--csv", "latin1.csv", "latin1")
    assert run.returncode == 0, run.stderr
    [record] = records(run)
    assert os.fsencode(record["path"]) == b"latin1/a\xff.jpeg" and "prediction" in record
    row = (project / "latin1.csv").read_bytes().splitlines()[1]
    assert row.startswith(b"latin1/a\xff.jpeg," + record["prediction"].encode() + b",")


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory):
    """The prefix that runs a command as a user to whom file modes apply, or a skip."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing: root reads any folder whatever its mode")
    closed = tmp_path_factory.mktemp("closed")
    closed.chmod(0)
    try:
        listing = subprocess.run([*UNPRIVILEGED, "ls", closed], capture_output=True, text=True)
    finally:
        closed.chmod(0o700)
    if "Permission denied" not in listing.stderr:
        pytest.skip("setpriv did not take root's power to read a mode-000 folder"
                    f" ({listing.stderr.strip() or 'it listed it'})")
    return UNPRIVILEGED


@pytest.fixture(scope="module")
def unreadable(project, unprivileged):
    """predict as that user on a PATH folder with a folder inside that it cannot read, and on
    a file in a folder it cannot enter (in one run); then on that folder alone."""
    root = project / "locked"
    for seed, name in enumerate(["open/good.png", "open/shut/hidden.png", "closed/x.png"]):
        write_image(root / name, 200 + seed, "RGB")
    closed = [root / "open/shut", root / "closed"]
    for folder in closed:
        folder.chmod(0)
    try:
        run = functools.partial(predict, project, "--task", "binary", user=unprivileged)
        return (run("--csv", "locked.csv", "--gradcam", "locked_cams", "--recursive",
                    "locked/open", "locked/closed/x.png"),
                run("locked/closed"))
    finally:
        for folder in closed:
            folder.chmod(0o755)


def test_a_file_in_a_folder_that_cannot_be_entered_gets_an_error_record(unreadable):
    run = unreadable[0]
    out = {r["path"]: r for r in records(run)}
    assert "PermissionError" in out["locked/closed/x.png"]["error"]
    assert "prediction" in out["locked/open/good.png"]
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "error: 1 of 2 images could not be read" in run.stderr


def test_a_folder_that_cannot_be_read_inside_a_path_gets_an_error_record(project, unreadable):
    run = unreadable[0]
    folder = {"path": "locked/open/shut", "error": "locked/open/shut: cannot read this folder"
              " (permission denied), so its images were not predicted; make it readable to this"
              " user and predict them again"}
    assert records(run)[0] == folder  # first, before the images
    assert "error: 1 folder(s) could not be read" in run.stderr
    table = pd.read_csv(project / "locked.csv")
    assert table.iloc[0].path == folder["path"] and table.iloc[0].error == folder["error"]
    # overlays are numbered by output line, the folder's record included
    assert [p.name for p in (project / "locked_cams").iterdir()] == ["0002_good.png"]


def test_a_path_folder_that_cannot_be_read_says_so_not_that_it_has_no_images(unreadable):
    run = unreadable[1]
    assert [r["path"] for r in records(run)] == ["locked/closed"]
    assert "locked/closed: cannot read this folder (permission denied)" in run.stdout
    assert "no image files" not in run.stderr and "Traceback" not in run.stderr
    assert run.returncode == 1 and run.stderr.endswith("error: 1 folder(s) could not be read\n")


def test_a_folder_is_searched_recursively_only_when_asked_and_a_summary_ends_it(project):
    for seed, name in enumerate(["top.png", "inner/deep.png"]):
        write_image(project / "nested" / name, 300 + seed, "RGB")
    flat = predict(project, "--task", "binary", "nested")
    assert [r["path"] for r in records(flat)] == ["nested/top.png"]
    assert "predict: 1 image(s) tried, 1 predicted, 0 failed" in flat.stderr
    deep = predict(project, "--task", "binary", "--recursive", "nested", "images/bad")
    assert [r["path"] for r in records(deep)] == [
        "nested/inner/deep.png", "nested/top.png", "images/bad/corrupt.jpeg",
        "images/bad/text.png"]
    assert "predict: 4 image(s) tried, 2 predicted, 2 failed" in deep.stderr


def test_help_shows_an_example_on_an_image_of_the_shared_datasets(project):
    shown = subprocess.run([COVIDXRAY, "predict", "--help"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    example = re.search(r"(\.\./shared/datasets/\S+\.png)", shown)
    assert example and "--task adult_covid" in shown and "--recursive" in shown
    if (ROOT / example[1]).parent.parent.is_dir():  # with the mirror beside the checkout
        assert (ROOT / example[1]).is_file()


def test_help_answers_without_importing_keras():
    """`--help` prints before Keras and TensorFlow are imported (seconds of a cold start)."""
    code = ("import sys\nfrom covidxray.app import predict\ntry:\n    predict.main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({'keras', 'tensorflow', 'jax'} & set(sys.modules)))")
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True)
    assert shown.stdout.strip().splitlines()[-1] == "[]", shown.stderr


def test_a_closed_stdout_ends_quietly_and_the_csv_still_holds_every_image(project):
    """`predict ... | head -1`: no BrokenPipeError traceback; --csv gets every image."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for csv in ("out/piped.csv", None):
        command = [COVIDXRAY, "predict", "--task", "binary", "--batch-size",
                   "1", *(["--csv", csv] if csv else []), "images/good"]
        run = subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": path})
        assert json.loads(run.stdout.readline())["path"] == "images/good/a_gray.png"
        run.stdout.close()  # as `head -1` does
        stderr = run.stderr.read()
        assert run.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr
        assert "stdout was closed by its reader" in stderr
        if csv:
            table = pd.read_csv(project / csv)
            assert len(table) == 4 and table["prediction"].notna().all()  # 4 top-level images


def test_outputs_that_cannot_take_the_predictions_stop_it_before_any_model_loads(project):
    """stdout closed from the start (`>&-`) without --csv, or --csv naming a folder: exit 2 at
    once, where the lines were lost (exit 0) or the table failed after every prediction."""
    closed = subprocess.run(f"{COVIDXRAY} predict --task binary images/good >&-", shell=True,
                            cwd=project, capture_output=True, text=True, timeout=300)
    assert closed.returncode == 2 and closed.stderr == (
        "error: stdout is closed, so every prediction would be lost; give --csv FILE, or run it"
        " with stdout open\n")
    folder = predict(project, "--task", "binary", "--csv", "images", "images/good")
    assert folder.returncode == 2 and folder.stdout == ""
    assert folder.stderr == "error: --csv images: a folder; name a file for the table\n"
    kept = subprocess.run(f"{COVIDXRAY} predict --task binary --csv out/closed.csv images/good"
                          " >&-", shell=True, cwd=project, capture_output=True, text=True,
                          timeout=300)
    assert kept.returncode == 0, kept.stderr
    assert len(pd.read_csv(project / "out/closed.csv")) == 4


def test_ctrl_c_writes_the_csv_of_the_images_predicted_so_far(project, tmp_path):
    folder = tmp_path / "many"
    for i in range(300):
        write_image(folder / f"{i:03d}.png", i % 7, "RGB")
    run = subprocess.Popen([COVIDXRAY, "predict", "--task", "binary", "--batch-size", "1",
                            "--csv", tmp_path / "so-far.csv", folder], cwd=project,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    json.loads(run.stdout.readline())  # one image is done
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    printed, table = 1 + len(out.splitlines()), pd.read_csv(tmp_path / "so-far.csv")
    n = len(table)  # every printed image, and the one being printed when Ctrl-C came, if any
    assert printed <= n <= printed + 1 < 300 and table["prediction"].notna().all()
    assert f"predict: interrupted: {n} image(s) tried, {n} predicted, 0 failed of 300;" \
           f" --csv {tmp_path / 'so-far.csv'} holds those" in err
    assert "to resume" not in err and "Traceback" not in err  # a command, not a stage


def test_a_large_scan_gets_an_overlay_of_at_most_1024_pixels_a_side(project, tmp_path):
    """Blending at a 9000-px scan's own size took 7 GB; the overlay keeps the aspect ratio."""
    scan = write_image(tmp_path / "scan.png", 5, "L", size=(2400, 1600))
    run = predict(project, "--task", "binary", "--gradcam", tmp_path / "cams", scan)
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "cams" / "0001_scan.png") as overlay:
        assert overlay.size == (1024, 683)


def test_the_readmes_noise_image_is_made_by_its_command_as_written(checked, tmp_path):
    """README.md's two console lines: its `python -c` makes the 300 x 300 grey noise, which
    `covidxray predict` flags as not an X-ray (here with a tiny model and reference)."""
    lines = re.findall(r"^\$ (.+)$", (ROOT / "README.md").read_text(), re.M)
    make = next(line for line in lines if "noise.png" in line and line.startswith("python -c"))
    for name in ("params.yaml", "elsewhere.keras"):
        shutil.copy(checked / name, tmp_path)
    shutil.copytree(checked / "models", tmp_path / "models")
    subprocess.run(make.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path,
                   check=True)
    with Image.open(tmp_path / "noise.png") as noise:
        assert (noise.size, noise.mode) == ((300, 300), "L")
    command = next(line for line in lines if line.startswith("covidxray predict --task binary"))
    run = predict(tmp_path, *command.split()[2:], "--model", "elsewhere.keras")
    assert records(run)[0]["prediction"] is None and "unreliable" in records(run)[0]
    assert run.stderr.endswith("predict: 1 image(s) tried, 0 predicted, 0 failed, 1 flagged"
                               " unreliable (no class)\n")


def test_a_fifo_among_the_images_is_named_and_does_not_hang(project, tmp_path):
    """Only regular files are images: a FIFO named like one gets an error record, at once."""
    folder = tmp_path / "with-fifo"
    write_image(folder / "a.png", 1, "RGB")
    os.mkfifo(folder / "b.png")
    run = predict(project, "--task", "binary", folder, folder / "b.png")
    found = records(run)
    assert [r["path"].rsplit("/", 1)[-1] for r in found] == ["a.png", "b.png", "b.png"]
    assert "prediction" in found[0]
    assert all("not a regular file (a FIFO" in r["error"] for r in found[1:])
    assert run.returncode == 1
