"""Make the five source datasets available under data/raw/, in their upstream layouts.

covid-chestxray-dataset (COVID-19), chest-xray-pneumonia (Kermany: normal and pneumonia, all
children), nih-chestxray14 (NIH ChestX-ray14: adults and children, normal and pneumonia) and
hannover-covid-19 (Hannover Medical School: adults with COVID-19) and
covid-chestxray-dataset-2020-06-22 (ieee8023's frontal X-rays added up to 2020-06-22: COVID-19
from 66 locations, and X-rays without it). From a local mirror folder
when there is one (default ../shared/datasets, or the folder named by COVIDXRAY_MIRROR), copied,
never written into; otherwise downloaded from upstream, except NIH's (45 GB in full) and
Hannover's and the 2020-06-22 rows, which the user fetches by hand when there is no mirror. Copies,
not links, because DVC tracks data/raw (`make setup` runs `dvc add`), so that experiments in
temporary workspaces get the data from DVC's cache. Safe to run again: a source already in
place is left alone.
"""

import io
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

RAW = Path("data/raw")
COVID = "covid-chestxray-dataset"
KERMANY = "chest-xray-pneumonia"
NIH = "nih-chestxray14"
HANNOVER = "hannover-covid-19"
COVID_JUNE = "covid-chestxray-dataset-2020-06-22"
COVID_JUNE_COMMIT = "584034aa7fbf06496741f11008d72fd791c8e443"  # upstream master, 2020-06-22
COVID_COMMIT = "4e47ad09d49db15d004c974e268bbbd3b7e10699"  # 2020-03-18, the tutorial's snapshot
COVID_URL = f"https://github.com/ieee8023/{COVID}/archive/{COVID_COMMIT}.zip"
KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"
NIH_URL = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
HANNOVER_URL = "https://github.com/ml-workgroup/covid-19-image-repository"  # doi 10.25835/0090041
# files a source must have one of, to tell a usable folder from an empty or partial one;
# NIH's labels CSV is named by release: 2017, its 2020 update, Kaggle's 5% sample
MARKERS = {
    COVID: ("metadata.csv",),
    KERMANY: ("chest_xray/train",),
    NIH: ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv", "sample_labels.csv"),
    HANNOVER: ("data.csv",),
    COVID_JUNE: ("metadata.csv",),
}
# the mirror holds only a sample of NIH's set, and names its folder so
MIRROR_NAMES = {NIH: "nih-chestxray14-sample"}


def mirror():
    return Path(os.environ.get("COVIDXRAY_MIRROR", "../shared/datasets")).expanduser()


def mirrored(name):
    return mirror() / MIRROR_NAMES.get(name, name)


def has_marker(folder, name):
    return any((folder / marker).exists() for marker in MARKERS[name])


def present(name):
    target = RAW / name
    return not target.is_symlink() and has_marker(target, name)


def free_target(name):
    """data/raw/<name>, which must not exist yet: a partial folder is not ours to overwrite."""
    target = RAW / name
    if target.is_symlink() or target.exists():
        sys.exit(f"error: {target} exists but lacks {' or '.join(MARKERS[name])}; "
                 "remove it and run again")
    return target


def copy(name, source):
    if (RAW / name).is_symlink():  # an earlier setup linked the mirror; DVC needs a copy
        (RAW / name).unlink()
    target = free_target(name)
    # copyfile, not copy2: the mirror's read-only modes would follow the files...
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    for folder in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)  # ...and copytree copies them onto the folders anyway
    print(f"get_data: copied {source} to {target}")


def download_covid():
    target = free_target(COVID)
    print(f"get_data: downloading {COVID_URL}")
    try:
        with urllib.request.urlopen(COVID_URL, timeout=120) as response:
            archive = zipfile.ZipFile(io.BytesIO(response.read()))
    except (OSError, zipfile.BadZipFile) as err:  # URLError and timeouts are OSErrors
        sys.exit(f"error: cannot download {COVID_URL} ({err});\n"
                 f"  point COVIDXRAY_MIRROR at a folder holding {COVID}/ instead")
    archive.extractall(RAW)
    (RAW / f"{COVID}-{COVID_COMMIT}").rename(target)


def download_kermany():
    has_key = (Path.home() / ".kaggle" / "kaggle.json").is_file() or (
        "KAGGLE_USERNAME" in os.environ and "KAGGLE_KEY" in os.environ
    )
    if not has_key or shutil.which("kaggle") is None:
        sys.exit(
            f"error: {RAW / KERMANY} is missing and no mirror was found at {mirror()}.\n"
            f"  Either point COVIDXRAY_MIRROR at a folder holding {KERMANY}/chest_xray/,\n"
            "  or download it from Kaggle: put your API token in\n"
            "  ~/.kaggle/kaggle.json (or set KAGGLE_USERNAME and KAGGLE_KEY) and run again."
        )
    subprocess.run(["kaggle", "datasets", "download", "-d", KAGGLE_DATASET,
                    "-p", str(RAW / KERMANY), "--unzip"], check=True)


def download_nih():
    sys.exit(
        f"error: {RAW / NIH} is missing and no mirror was found at {mirror()}.\n"
        f"  Either point COVIDXRAY_MIRROR at a folder holding {MIRROR_NAMES[NIH]}/,\n"
        f"  or put one of these into {RAW / NIH}/ and run again (not downloaded for you:\n"
        "  the full set is 45 GB):\n"
        f"  - NIH's download ({NIH_URL}):\n"
        "    Data_Entry_2017.csv and images_001/images/ ... images_012/images/;\n"
        "  - Kaggle's 5% sample nih-chest-xrays/sample: sample_labels.csv and images/."
    )


def download_hannover():
    sys.exit(
        f"error: {RAW / HANNOVER} is missing and no mirror was found at {mirror()}.\n"
        f"  Either point COVIDXRAY_MIRROR at a folder holding {HANNOVER}/,\n"
        f"  or get it by hand from {HANNOVER_URL} (doi 10.25835/0090041):\n"
        f"  put its data.csv and png/ into {RAW / HANNOVER}/ and run again."
    )


def download_covid_june():
    sys.exit(
        f"error: {RAW / COVID_JUNE} is missing and no mirror was found at {mirror()}.\n"
        f"  Either point COVIDXRAY_MIRROR at a folder holding {COVID_JUNE}/,\n"
        f"  or build it by hand from ieee8023/{COVID} at {COVID_JUNE_COMMIT}:\n"
        f"  its metadata.csv rows of frontal X-rays (PA, AP, AP Supine) whose file is not in\n"
        f"  {RAW / COVID}/, and those images, into {RAW / COVID_JUNE}/ (docs/data.md)."
    )


def main():
    RAW.mkdir(parents=True, exist_ok=True)
    sources = ((COVID, download_covid), (KERMANY, download_kermany), (NIH, download_nih),
               (HANNOVER, download_hannover), (COVID_JUNE, download_covid_june))
    for name, download in sources:
        if present(name):
            print(f"get_data: {RAW / name} already in place")
        elif has_marker(mirrored(name), name):
            copy(name, mirrored(name))
        else:
            download()


if __name__ == "__main__":
    main()
