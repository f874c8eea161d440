"""The files bench/device_check.sh needs on a GPU machine with no network and no TensorFlow.

    python -m bench.device_files     # then carry .whl and .device (both git-ignored) there

Everything that travels in a device call, the working tree included, must fit in 64 MiB; this
stops, naming the sizes, where it would not.

.whl/: wheels for Python 3.12 on x86-64 of what the stages import that such a machine lacks
(it has JAX, NumPy, pandas, scikit-learn, h5py, PyYAML, Pillow, matplotlib and tqdm). DVCLive
needs part of DVC at import, hence the DVC packages.
.device/vgg16_hed_fp16.weights.h5: the `hed` backbone as a Keras weights file, rounded to
float16 (28 MiB instead of 56), so that it travels with the data within the 64 MiB a call
carries. Its features are printed against hed's: about 0.5% apart under mixed_bfloat16.
.device/data.tar.xz: what the stages after decoding read (data/merged, data/split,
data/prepared, data/external), xz-compressed: X-rays' dark borders pack 69 MB into about 15.
"""

import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np

from bench.workspace import ROOT, tree_files
from covidxray.data.shards import prepared_images
from covidxray.model.backbone import build_backbone, build_extractor
from covidxray.model.features import plain_features

WHEELS = Path(".whl")
WEIGHTS = Path(".device/vgg16_hed_fp16.weights.h5")
DATA = Path(".device/data.tar.xz")
DATA_FOLDERS = ("data/merged", "data/split", "data/prepared", "data/external")
CARRY_LIMIT = 64 * 2**20  # bytes a device call takes, the working tree included
PACKAGES = (
    "keras==3.15.1 namex==0.1.0 optree==0.20.0 typing_extensions==4.16.0 dvclive==3.49.1"
    " dvc==3.67.1 atpublic==9.0.0 attrs==26.1.0 configobj==5.0.9 diskcache==5.6.3"
    " dpath==2.2.0 dulwich==1.2.21 dvc-data==3.18.3 dvc-http==2.32.0 dvc-objects==5.2.0"
    " dvc-render==1.0.2 dvc-studio-client==0.23.0 flatten-dict==0.5.0 flufl.lock==9.2.0"
    " fsspec==2026.9.0 funcy==2.1 pathspec==1.1.1 platformdirs==4.14.8 pygtrie==2.6.2"
    " ruamel.yaml==0.19.1 scmrepo==3.6.2 sqltrie==0.11.3 voluptuous==0.16.0 zc.lockfile==4.0"
).split()
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def download_wheels():
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    *platforms, "-d", str(WHEELS), *PACKAGES], check=True)


def half_weights(size):
    """hed's VGG16 saved by a float16 VGG16, whose save_weights then stores float16 arrays."""
    hed = build_backbone("hed", size)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float16")
    try:
        half = keras.applications.VGG16(include_top=False, weights=None,
                                        input_shape=(size, size, 3))
    finally:
        keras.config.set_dtype_policy(previous)
    half.set_weights([w.astype(np.float16) for w in hed.get_weights()])
    WEIGHTS.parent.mkdir(exist_ok=True)
    half.save_weights(WEIGHTS)


def feature_error(size, images):
    """Relative L2 distance of the float16 copy's features from hed's, both in mixed_bfloat16."""
    hed, half = (plain_features(build_extractor(build_backbone(weights, size, "mixed_bfloat16")),
                                images, 32) for weights in ("hed", str(WEIGHTS.resolve())))
    return float(np.linalg.norm(half - hed) / np.linalg.norm(hed))


def pack_data(target=DATA, folders=DATA_FOLDERS):
    """The folders in one xz tarball (stdlib lzma: the GPU machine unpacks it with tar)."""
    missing = [folder for folder in folders if not Path(folder).is_dir()]
    if missing:
        sys.exit(f"error: {', '.join(missing)} missing: run `dvc repro external` first")
    target.parent.mkdir(exist_ok=True)
    with tarfile.open(target, "w:xz", preset=6) as tar:
        for folder in folders:
            tar.add(folder)


def tree_bytes():
    """What git would carry of the working tree: tracked and untracked, not ignored, files."""
    return sum((ROOT / name).stat().st_size for name in tree_files())


def carried_mib(paths):
    """MiB of what a call carrying `paths` sends, or exit naming each part when over the limit."""
    parts = {str(path): sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
             for path in paths}
    parts["working tree"] = tree_bytes()
    total = sum(parts.values())
    if total > CARRY_LIMIT:
        sys.exit("error: " + ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in
                                       parts.items()) + f": over the {CARRY_LIMIT >> 20} MiB"
                 " a device call carries")
    return total / 2**20


def main():
    download_wheels()
    print(f"{WHEELS}: {len(list(WHEELS.glob('*.whl')))} wheels")
    images = prepared_images()[:32]
    half_weights(images.shape[1])
    print(f"{WEIGHTS}: {WEIGHTS.stat().st_size / 2**20:.1f} MiB, features"
          f" {feature_error(images.shape[1], images):.1e} from hed's (relative L2)")
    pack_data()
    print(f"{DATA}: {DATA.stat().st_size / 2**20:.1f} MiB")
    print(f"carry [.whl, .device]: {carried_mib([WHEELS, WEIGHTS.parent]):.1f} MiB in all")


if __name__ == "__main__":
    main()
