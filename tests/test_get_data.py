import importlib.util
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT


def get_data(cwd, mirror, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(COVIDXRAY_MIRROR=str(mirror), HOME=str(home))
    return subprocess.run([sys.executable, ROOT / "scripts" / "get_data.py"], cwd=cwd, env=env,
                          capture_output=True, text=True)


def fake_mirror(path, with_kermany=True):
    (path / "covid-chestxray-dataset").mkdir(parents=True)
    (path / "covid-chestxray-dataset" / "metadata.csv").write_text("Patientid\n")
    if with_kermany:
        (path / "chest-xray-pneumonia" / "chest_xray" / "train").mkdir(parents=True)
    return path


def test_sources_are_copied_from_the_mirror_and_a_second_run_is_harmless(tmp_path):
    mirror = fake_mirror(tmp_path / "mirror")
    raw = tmp_path / "repo" / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "chest-xray-pneumonia").symlink_to(mirror / "chest-xray-pneumonia")  # older setups
    (mirror / "covid-chestxray-dataset").chmod(0o555)  # mirrors are read-only
    first = get_data(tmp_path / "repo", mirror, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (raw / "covid-chestxray-dataset" / "metadata.csv").read_text() == "Patientid\n"
    assert (raw / "chest-xray-pneumonia" / "chest_xray" / "train").is_dir()
    assert not any(path.is_symlink() for path in raw.iterdir())
    assert (raw / "covid-chestxray-dataset").stat().st_mode & 0o200  # copies are writable
    second = get_data(tmp_path / "repo", mirror, tmp_path)
    assert second.returncode == 0 and second.stdout.count("already in place") == 2


def test_without_mirror_or_kaggle_token_it_says_how_to_get_the_kaggle_set(tmp_path):
    mirror = fake_mirror(tmp_path / "mirror", with_kermany=False)
    (tmp_path / "repo").mkdir()
    run = get_data(tmp_path / "repo", mirror, tmp_path)
    assert run.returncode == 1
    assert "chest-xray-pneumonia is missing" in run.stderr
    assert "~/.kaggle/kaggle.json" in run.stderr and "COVIDXRAY_MIRROR" in run.stderr


def test_a_failed_download_says_what_failed_and_what_to_do_instead(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("get_data", ROOT / "scripts" / "get_data.py")
    get_data_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_data_module)

    def offline(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("COVIDXRAY_MIRROR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="(?s)cannot download .*no route to host.*COVIDXRAY_MIRROR"):
        get_data_module.main()
