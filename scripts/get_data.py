"""Make the two source datasets available under data/raw/, in their upstream layouts.

From a local mirror folder when there is one (default ../shared/datasets, or the folder named
by COVIDXRAY_MIRROR), copied, never written into; otherwise downloaded from upstream. Copies,
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
COVID_COMMIT = "4e47ad09d49db15d004c974e268bbbd3b7e10699"  # 2020-03-18, the tutorial's snapshot
COVID_URL = f"https://github.com/ieee8023/{COVID}/archive/{COVID_COMMIT}.zip"
KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"
# a file each source must have, to tell a usable folder from an empty or partial one
MARKERS = {COVID: "metadata.csv", KERMANY: "chest_xray/train"}


def mirror():
    return Path(os.environ.get("COVIDXRAY_MIRROR", "../shared/datasets")).expanduser()


def present(name):
    target = RAW / name
    return not target.is_symlink() and (target / MARKERS[name]).exists()


def free_target(name):
    """data/raw/<name>, which must not exist yet: a partial folder is not ours to overwrite."""
    target = RAW / name
    if target.is_symlink() or target.exists():
        sys.exit(f"error: {target} exists but lacks {MARKERS[name]}; remove it and run again")
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


def main():
    RAW.mkdir(parents=True, exist_ok=True)
    for name, download in ((COVID, download_covid), (KERMANY, download_kermany)):
        if present(name):
            print(f"get_data: {RAW / name} already in place")
        elif (mirror() / name / MARKERS[name]).exists():
            copy(name, mirror() / name)
        else:
            download()


if __name__ == "__main__":
    main()
