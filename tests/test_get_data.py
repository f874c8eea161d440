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


def fake_mirror(path, with_kermany=True, with_nih=True, with_hannover=True, with_june=True):
    (path / "covid-chestxray-dataset").mkdir(parents=True)
    (path / "covid-chestxray-dataset" / "metadata.csv").write_text("Patientid\n")
    if with_kermany:
        (path / "chest-xray-pneumonia" / "chest_xray" / "train").mkdir(parents=True)
    if with_nih:
        (path / "nih-chestxray14-sample" / "images").mkdir(parents=True)
        (path / "nih-chestxray14-sample" / "images" / "00000001_000.png").write_bytes(b"png")
        (path / "nih-chestxray14-sample" / "Data_Entry_2017.csv").write_text("Image Index\n")
    if with_hannover:
        (path / "hannover-covid-19" / "png").mkdir(parents=True)
        (path / "hannover-covid-19" / "png" / "fff13f3a.png").write_bytes(b"png")
        (path / "hannover-covid-19" / "data.csv").write_text("patient_id\n")
    if with_june:
        (path / "covid-chestxray-dataset-2020-06-22").mkdir(parents=True)
        (path / "covid-chestxray-dataset-2020-06-22" / "metadata.csv").write_text("patientid\n")
    return path


def test_sources_are_copied_from_the_mirror_and_a_second_run_is_harmless(tmp_path):
    mirror = fake_mirror(tmp_path / "mirror")
    raw = tmp_path / "repo" / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "chest-xray-pneumonia").symlink_to(mirror / "chest-xray-pneumonia")  # older setups
    for folder in ("covid-chestxray-dataset", "hannover-covid-19/png"):
        (mirror / folder).chmod(0o555)  # mirrors are read-only
    first = get_data(tmp_path / "repo", mirror, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (raw / "covid-chestxray-dataset" / "metadata.csv").read_text() == "Patientid\n"
    assert (raw / "chest-xray-pneumonia" / "chest_xray" / "train").is_dir()
    assert (raw / "hannover-covid-19" / "data.csv").read_text() == "patient_id\n"
    assert (raw / "hannover-covid-19" / "png" / "fff13f3a.png").read_bytes() == b"png"
    assert (raw / "hannover-covid-19" / "png").stat().st_mode & 0o200
    assert not any(path.is_symlink() for path in raw.iterdir())
    assert (raw / "covid-chestxray-dataset").stat().st_mode & 0o200  # copies are writable
    second = get_data(tmp_path / "repo", mirror, tmp_path)
    assert second.returncode == 0 and second.stdout.count("already in place") == 5


def test_the_nih_sample_is_copied_from_its_mirror_folder_to_data_raw_nih_chestxray14(tmp_path):
    mirror = fake_mirror(tmp_path / "mirror")
    (mirror / "nih-chestxray14-sample" / "images").chmod(0o555)  # mirrors are read-only
    (tmp_path / "repo").mkdir()
    run = get_data(tmp_path / "repo", mirror, tmp_path)
    raw = tmp_path / "repo" / "data" / "raw"
    assert run.returncode == 0, run.stderr
    assert (raw / "nih-chestxray14" / "Data_Entry_2017.csv").read_text() == "Image Index\n"
    assert (raw / "nih-chestxray14" / "images" / "00000001_000.png").read_bytes() == b"png"
    assert not (raw / "nih-chestxray14-sample").exists()
    assert (raw / "nih-chestxray14" / "images").stat().st_mode & 0o200  # copies are writable


@pytest.mark.parametrize("labels", ["Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv",
                                    "sample_labels.csv"])
def test_any_of_nihs_labels_files_marks_its_folder_as_in_place(tmp_path, labels):
    mirror = fake_mirror(tmp_path / "mirror", with_nih=False)  # else a miss would copy, not fail
    nih = tmp_path / "repo" / "data" / "raw" / "nih-chestxray14"
    nih.mkdir(parents=True)
    (nih / labels).write_text("Image Index\n")
    run = get_data(tmp_path / "repo", mirror, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "data/raw/nih-chestxray14 already in place" in run.stdout


@pytest.mark.parametrize("missing, name, advice", [
    ({"with_nih": False}, "nih-chestxray14",
     ["COVIDXRAY_MIRROR", "nih-chestxray14-sample/", "nihcc.app.box.com", "images_012/images/",
      "nih-chest-xrays/sample", "sample_labels.csv"]),
    ({"with_kermany": False}, "chest-xray-pneumonia",
     ["~/.kaggle/kaggle.json", "COVIDXRAY_MIRROR"]),
    ({"with_hannover": False}, "hannover-covid-19",
     ["COVIDXRAY_MIRROR", "github.com/ml-workgroup/covid-19-image-repository", "10.25835/0090041",
      "data.csv and png/ into data/raw/hannover-covid-19/"]),
    ({"with_june": False}, "covid-chestxray-dataset-2020-06-22",
     ["COVIDXRAY_MIRROR", "584034aa7fbf06496741f11008d72fd791c8e443", "PA, AP, AP Supine",
      "into data/raw/covid-chestxray-dataset-2020-06-22/"]),
])
def test_without_mirror_it_says_how_to_get_a_source_by_hand(tmp_path, missing, name, advice):
    mirror = fake_mirror(tmp_path / "mirror", **missing)
    (tmp_path / "repo").mkdir()
    run = get_data(tmp_path / "repo", mirror, tmp_path)
    assert run.returncode == 1
    assert f"{name} is missing" in run.stderr
    assert all(words in run.stderr for words in advice)
    assert not (tmp_path / "repo" / "data" / "raw" / name).exists()


def test_a_failed_download_says_what_failed_and_what_to_do_instead(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("get_data", ROOT / "scripts" / "get_data.py")
    get_data_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_data_module)

    def offline(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("COVIDXRAY_MIRROR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit,
                       match="(?s)cannot download .*no route to host.*COVIDXRAY_MIRROR"):
        get_data_module.main()
