"""The demo page: its model card and results in-process, and the real `covidxray demo`
driven by headless Chromium in a project folder holding params.yaml, tiny models and metrics."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="gradio is not installed (requirements.txt)")

from covidxray.app import demo  # noqa: E402 (after the skip: it imports gradio)
from covidxray.config.params import load_params  # noqa: E402
from covidxray.errors import PipelineError  # noqa: E402
from tests.conftest import (COVIDXRAY, ROOT, free_port, predict, records, write_image,  # noqa: E402
                            write_tiny_models)

CLASSES = {"binary": ["normal", "covid"], "three": ["normal", "bacterial", "covid"]}
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# metrics/ as evaluate and holdout write it, the holdout judging `three` here
METRICS = {
    "binary.json": {"accuracy": 1.0, "ci95_low": 0.8241, "ci95_high": 1.0, "covid_recall": 1.0,
                    "false_alarm": None},
    "three.json": {"accuracy": 0.8889, "ci95_low": 0.7194, "ci95_high": 0.9615,
                   "covid_recall": 0.7778, "false_alarm": 0.9297},
    "detail/three.json": {"test": {"correct": 24, "n": 27}},
    "holdout.json": {"covid_recall": 0.5434, "false_alarm": 0.1056, "within_auc": 0.6903},
    "detail/holdout.json": {"task": "three", "targets": {"recall": 0.85, "false_alarm": 0.1},
                            "verdict": {"met": {"recall": False, "false_alarm": False}}},
}


def write_metrics(root, files=METRICS):
    for name, content in files.items():
        path = root / "metrics" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


@pytest.fixture
def metrics_only(tmp_path, monkeypatch):
    """A project folder with params.yaml and metrics/, no models: the card's inputs."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    write_metrics(tmp_path)
    return load_params()


def test_model_card_of_the_task_the_holdout_judges_has_every_number(metrics_only):
    card = demo.model_card(metrics_only, "three")
    assert "classes **normal, bacterial, covid** from the sources **kermany, covid-chestxray**" \
        in card
    assert "| test accuracy (95% CI) | 0.89 (0.72-0.96), 24 of 27 test images" in card
    assert "COVID-19 found on the test split | 0.778 |" in card
    assert "called COVID-19 | 0.930 |" in card
    assert ("in turn, mean) | 0.543, target at least 0.85: missed (metrics/holdout.json) |"
            in card)
    assert ("| adults without COVID-19 called COVID-19 then | 0.106, target at most 0.1: missed |"
            in card)
    assert "Do not use it on adults." in card  # headline.task_verdict's sentence


def test_model_card_says_what_was_not_measured_for_a_task(metrics_only):
    card = demo.model_card(metrics_only, "binary")
    assert "| test accuracy (95% CI) | 1.00 (0.82-1.00) (metrics/binary.json) |" in card
    assert "called COVID-19 | not measured for this task |" in card
    assert "| COVID-19 found on a hospital it never saw | not measured for this task |" in card


def test_model_card_says_whether_inputs_are_checked_for_being_chest_xrays(metrics_only):
    assert "**Inputs are not checked** for looking like a frontal chest X-ray: no models/ood.npz"\
        in demo.model_card(metrics_only, "binary")
    Path("models").mkdir(exist_ok=True)
    Path("models/ood.npz").write_bytes(b"")  # the card looks only for the file
    card = demo.model_card(metrics_only, "binary")
    assert "not checked" not in card and "gets no class" in card and "lateral X-rays" in card


def test_model_card_of_a_task_without_metrics_says_how_to_measure_it(metrics_only):
    assert demo.model_card(metrics_only, "four").endswith(
        "No metrics/four.json: run `dvc repro evaluate@four` to measure this model.")


def test_a_page_without_any_trained_model_is_one_clear_error(metrics_only):
    with pytest.raises(PipelineError, match=r"no trained model in models/ for any task of"
                       r" params.yaml \(binary, .*\); train them with `dvc repro`"):
        demo.build(metrics_only)


def test_an_unreliable_image_shows_its_warning_under_its_probabilities():
    record = {"prediction": None, "probabilities": {"normal": 0.25, "covid": 0.75},
              "unreliable": "/up/x.png: unlike any training image"}
    table = demo.results_table([Path("/up/x.png")], [record], ["normal", "covid"])
    assert ("<td><b>none: unreliable</b></td><td class='p'>0.250000</td>"
            "<td class='p'>0.750000</td></tr>") in table
    assert "<td class='unreliable' colspan='3'>&#9888; x.png: unlike any training image" in table


def test_a_handler_that_fails_unexpectedly_shows_one_line(capsys):
    @demo.shown(lambda line: (demo.message(line), []))
    def broken(task, files):
        raise KeyError("three")

    assert broken("three", []) == ("<p class='error'>unexpected error: KeyError: &#x27;three&#x27;"
                                   "</p>", [])
    assert capsys.readouterr().err == "demo: unexpected error: KeyError: 'three'\n"


# the real page in a real browser


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """params.yaml, tiny binary and three models, metrics/, and good and bad images."""
    root = tmp_path_factory.mktemp("demo")
    shutil.copy(ROOT / "params.yaml", root)
    write_tiny_models(root / "models", CLASSES)
    write_metrics(root)
    write_image(root / "images/a_gray.png", 1, "L")
    write_image(root / "images/b_rgb.jpeg", 2, "RGB")
    jpeg = write_image(root / "images/corrupt.jpeg", 3, "RGB", size=(64, 64))
    jpeg.write_bytes(jpeg.read_bytes()[:len(jpeg.read_bytes()) // 2])
    (root / "images/text.png").write_text("a text file named .png")
    return root


def demo_process(project, *args):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([COVIDXRAY, "demo", *args], cwd=project,
                            env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until_served(process, url, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"covidxray demo ended: {process.communicate()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"covidxray demo did not serve {url} in {seconds} s")


@pytest.fixture(scope="module")
def served(project):
    """`covidxray demo` on a free port in `project`, and its URL."""
    port = free_port()
    process = demo_process(project, "--port", str(port))
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(process, url)
        yield process, url
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's chromium and"
                    " chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def expected(project):
    """predict's record of each image, by file name."""
    return {Path(r["path"]).name: r for r in records(predict(project, "--task", "binary",
                                                               "images"))}


@pytest.fixture(scope="module")
def uploaded(project, served, browser):
    """The page after uploading two good images, a corrupt one and a text file at once."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served[1])
    wait = WebDriverWait(browser, 90)
    upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#xrays input[type=file]"))
    names = ["a_gray.png", "b_rgb.jpeg", "corrupt.jpeg", "text.png"]
    upload.send_keys("\n".join(str(project / "images" / name) for name in names))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#probabilities")
               and len(b.find_elements(By.CSS_SELECTOR, "#overlays img")) == 2)
    return browser


@pytest.mark.slow  # a server process and a browser
def test_the_page_shows_predicts_probabilities_and_an_overlay_per_image(expected, uploaded):
    from selenium.webdriver.common.by import By

    rows = uploaded.find_elements(By.CSS_SELECTOR, "#probabilities tr")
    shown = {cells[0].text: cells[1:] for cells in
             (row.find_elements(By.TAG_NAME, "td") for row in rows[1:])}
    for name in ("a_gray.png", "b_rgb.jpeg"):
        prediction, *probabilities = [cell.text for cell in shown[name]]
        assert prediction == expected[name]["prediction"]
        assert sum(map(float, probabilities)) == pytest.approx(1, abs=1e-5)
        assert list(map(float, probabilities)) == pytest.approx(
            list(expected[name]["probabilities"].values()), abs=2e-6)
    for img in uploaded.find_elements(By.CSS_SELECTOR, "#overlays img"):
        assert int(img.get_attribute("naturalWidth")) > 0  # decoded, not a broken image
    assert uploaded.find_element(By.CSS_SELECTOR, "#model-card").text.startswith(
        "Model card: binary")
    assert uploaded.find_element(By.CSS_SELECTOR, "#disclaimer").text.startswith(
        "This is not a medical device.")


@pytest.mark.slow
def test_a_bad_file_shows_predicts_message_and_no_traceback(expected, uploaded):
    from selenium.webdriver.common.by import By

    for name in ("corrupt.jpeg", "text.png"):
        record = expected[name]
        message = record["error"].replace(record["path"], name)
        assert "truncated" in message or "cannot identify image file" in message
        shown = uploaded.find_element(By.XPATH, f"//td[text()='{name}']/following-sibling::td")
        assert shown.text == message and "error" in shown.get_attribute("class")
    assert "Traceback" not in uploaded.page_source


@pytest.mark.slow
def test_the_page_answers_only_its_own_host_and_keeps_uploads_private(served):
    """A request named for another host (DNS rebinding) gets 400, one sent by another site's page
    403; the uploads folder is this process's own, mode 700."""
    process, url = served
    request = urllib.request.Request(url, headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    with urllib.request.urlopen(url.replace("127.0.0.1", "localhost"), timeout=10) as page:
        assert page.status == 200
    upload = url + "gradio_api/upload"
    elsewhere = urllib.request.Request(upload, data=b"x", headers={"Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(elsewhere, timeout=10)
    assert refused.value.code == 403  # a page of another site may not upload here
    own = urllib.request.Request(upload, data=b"x", headers={"Origin": url.rstrip("/")})
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(own, timeout=10)
    assert answered.value.code != 403  # the page's own requests reach gradio (a bad body here)
    folders = list(Path(tempfile.gettempdir()).glob("covidxray-demo-*"))
    mine = [f for f in folders if f.stat().st_uid == os.getuid()]
    assert mine and all(f.stat().st_mode & 0o077 == 0 for f in mine)


@pytest.mark.slow
def test_a_port_in_use_is_one_clear_error(project, served):
    port = served[1].rsplit(":", 1)[1].strip("/")
    second = demo_process(project, "--port", port)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 1 and out == "" and "Traceback" not in err
    assert err.endswith(f"error: cannot serve the page on 127.0.0.1:{port}: the port is in use"
                        " or the address is not one of this machine's; pick another with --port"
                        " or --host\n")
