"""Shared fixtures: a small source tree in the upstream layouts, built from generated images."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# machine.remembered keeps its measurements in the cache folder: the tests' own, not the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="covidxray-test-cache-")
METADATA_HEADER = "Patientid,offset,sex,age,finding,survival,view,modality,date,location,filename\n"
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")
# the 2020-06-22 snapshot's: columns renamed and added, a trailing empty one
JUNE_HEADER = ("patientid,offset,sex,age,finding,survival,intubated,intubation_present,went_icu,"
               "in_icu,needed_supplemental_O2,extubated,temperature,pO2_saturation,"
               "leukocyte_count,neutrophil_count,lymphocyte_count,view,modality,date,location,"
               "folder,filename,doi,url,license,clinical_notes,other_notes,\n")
HANNOVER_HEADER = ("patient_id,image_id,sex,age,size,weight,admission_offset,icu_admission_offset,"
                   "icu_release_offset,death_offset,modality,projection,crp_offset,crp_val\n")


def nih_row(name, labels, patient, age, view="PA"):
    return f"{name},{labels},0,{patient},{age},M,{view},1024,1024,0.143,0.143\n"


def hannover_row(patient, image, projection):
    return f"{patient},{image},f,,,,0,,,,CR,{projection},0.0,3.0\n"


def june_row(patient, finding, view, location, filename, age="50"):
    """A metadata.csv row in the schema of the 2020-06-22 snapshot (JUNE_HEADER)."""
    return (f"{patient},0,M,{age},\"{finding}\",,,,,,,,,,,,,{view},X-ray,2020,\"{location}\","
            "images,"
            f"{filename},,,,,,\n")


def june_layout(root, rows, seed=500):
    """metadata.csv of rows (june_row's arguments) in the 2020-06-22 schema and images/ of each;
    a filename that starts with `missing` gets no image."""
    for i, row in enumerate(rows):
        if not row[4].startswith("missing"):
            write_image(root / "images" / row[4], seed + i)
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text(JUNE_HEADER + "".join(june_row(*row) for row in rows))
    return root


def hannover_layout(root, rows, seed=400):
    """data.csv of rows (patient_id, image_id, projection) and png/<image_id>.png of each; an
    image_id that starts with `missing` or is not a plain name gets no image."""
    for i, (_, image, _) in enumerate(rows):
        if image and not image.startswith("missing") and "/" not in image:
            write_image(root / "png" / f"{image}.png", seed + i)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.csv").write_text(HANNOVER_HEADER + "".join(hannover_row(*row) for row in rows))
    return root


def mirror():
    """The read-only mirror of the real datasets, or None where it is not beside the repo."""
    path = Path(os.environ.get("COVIDXRAY_MIRROR", ROOT.parent / "shared" / "datasets"))
    return path if (path / "covid-chestxray-dataset" / "metadata.csv").is_file() else None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_image(path, seed=0, mode="L", size=(40, 32)):
    """A small random image; the seed makes its bytes unique."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image = (image.convert(mode) if mode != "I;16"
             else Image.fromarray(pixels.astype(np.uint16) * 200))
    image.save(path)
    return path


def write_tiny_models(models, tasks, size=32):
    """models/<task>.keras in folder `models` for each task of `tasks` (task -> classes): an
    untrained classifier of `size` px on no backbone weights with the default head, as train
    saves one."""
    import keras

    from covidxray.config.params import load_params
    from covidxray.model import classifier as m
    from covidxray.model.backbone import build_backbone, build_extractor
    from covidxray.model.head import adapt_head, build_head

    models.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)  # the same heads every run, so the tests see the same model
    extractor = build_extractor(build_backbone("none", size))
    layers = load_params(ROOT / "params.yaml").head.layers()  # the default head
    features = np.random.default_rng(0).uniform(0, 9, (8, *extractor.output_shape[1:]))
    for task, classes in tasks.items():
        head = build_head(len(classes), extractor.output_shape[1:], **layers)
        adapt_head(head, [features])
        m.build_classifier(extractor, head).save(models / f"{task}.keras")


# The `covidxray` command as the docs show it: make setup installs it into the venv beside the
# python that runs the tests (`python -m covidxray` is the same, without installing).
COVIDXRAY = str(Path(sys.executable).with_name("covidxray"))


def predict(project, *args, user=()):
    """`covidxray predict` run in `project`, as `user` (a command prefix) when given;
    one that hangs (say on a FIFO) fails after 5 minutes instead of holding CI."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # as from a shell: without the TF_CPP_MIN_LOG_LEVEL that importing Keras set in this process
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([*user, COVIDXRAY, "predict", *map(str, args)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)


def records(run):
    """predict's JSON records on stdout: every line must be one."""
    return [json.loads(line) for line in run.stdout.splitlines()]


# params for running stages in-process on the `sources` fixture: 32 px, no backbone weights
TINY = {"image_size": 32, "shard_size": 5, "backbone": {"weights": "none"},
        "tasks": {"binary": {"classes": ["normal", "covid"],
                             "sources": ["kermany", "covid-chestxray"], "epochs": 1,
                             "lr": 1e-3, "batch_size": 4}},
        "split": {"test_per_class": 1, "val_fraction": 0.5}}


def with_june(**sets):
    """merge.sources: params.yaml's (the June collection, which adult_covid names), and `sets`."""
    return {**yaml.safe_load((ROOT / "params.yaml").read_text())["merge"]["sources"], **sets}


def write_params(**changes):
    """params.yaml in the current folder: the repo's, with a section's keys replaced."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in changes.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:
            params[section] = values
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


DELETE = object()  # params_with: take the key out


def params_with(folder, changes=None):
    """The repo's params.yaml written into `folder`, each dotted key of `changes` (as
    "head.pooling" or "tasks.binary.head") set to its value, or taken out when it is DELETE;
    its path, for load_params."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        section = params
        for key in parents:
            section = section.setdefault(key, {})
        if value is DELETE:
            del section[last]
        else:
            section[last] = value
    path = Path(folder) / "params.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def external_set(name, spec):
    """External set `name` of `spec` (a mapping, as under `external` in params.yaml) as
    load_params reads it: a layouts.ExternalSet."""
    from covidxray.config.params import load_params

    with tempfile.TemporaryDirectory(prefix="params-") as folder:
        return load_params(params_with(folder, {f"external.{name}": spec})).external[name]


def make_head(**changes):
    """A head's params: a linear head on flattened features, no normalisation or weighting."""
    from covidxray.config.schema import Head

    return Head(**{"pooling": "flatten", "normalize": False, "variance_floor": 0.0, "units": 0,
                   "dropout": 0.0, "l2": 0.0, "class_weight": "none", "restore_best": False,
                   **changes})


def make_task(classes=("normal", "covid"), sources=("kermany", "covid-chestxray"), epochs=1,
              lr=1e-3, batch_size=4, name="t", **head_changes):
    """A task's params (schema.Task), its head per make_head(**head_changes)."""
    from covidxray.config.schema import Task

    return Task(name, tuple(classes), tuple(sources), epochs, lr, batch_size,
                make_head(**head_changes))


def make_recipe(task, seed=0, shard_size=1024, plain_view=True, views=0, **backbone):
    """A recipe (params.Recipe) for training `task` on the bank; backbone keys as
    trainable_blocks=1, fine_tune_lr=..., fine_tune_epochs=... for fine-tuning."""
    from covidxray.config.params import Recipe
    from covidxray.config.schema import Augment, Backbone, Features

    still = Augment(rotation_degrees=0.0, shift=0.0, shear_degrees=0.0, zoom=0.0,
                    channel_shift=0.0, horizontal_flip=False, vertical_flip=False,
                    fill_mode="constant")
    return Recipe(task, Backbone(**{"weights": "none", "precision": "float32", **backbone}),
                  Features(views=views, plain_view=plain_view, batch_size=8), still, seed,
                  shard_size)


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """A project folder whose data/raw holds 4 images of each class in the upstream layouts,
    4 NIH adults without a finding and 4 with pneumonia, and a Hannover data.csv without rows
    (hannover_layout adds them), so the other sources' tests see no Hannover image."""
    monkeypatch.chdir(tmp_path)
    kermany = Path("data/raw/chest-xray-pneumonia/chest_xray/train")
    covid = Path("data/raw/covid-chestxray-dataset")
    seed = iter(range(1000))
    for i in range(4):
        write_image(kermany / "NORMAL" / f"IM-{100 + i:04d}-0001.jpeg", next(seed))
        write_image(kermany / "PNEUMONIA" / f"person{i}_bacteria_{i}.jpeg", next(seed))
        write_image(kermany / "PNEUMONIA" / f"person{10 + i}_virus_{i}.jpeg", next(seed))
    rows = []
    for i in range(4):
        write_image(covid / "images" / f"covid-{i}.png", next(seed), mode="RGB")
        rows.append(f"{i},0,M,60,COVID-19,,PA,X-ray,2020,,covid-{i}.png\n")
    rows.append("9,0,F,50,COVID-19,,AP,X-ray,2020,,ap-view.png\n")  # filtered out by view
    (covid / "metadata.csv").write_text(METADATA_HEADER + "".join(rows))
    nih, rows = Path("data/raw/nih-chestxray14"), []
    for i in range(4):  # adults: 4 without a finding, 4 with pneumonia (and another finding)
        for labels, patient in (("No Finding", 100 + i), ("Pneumonia|Effusion", 200 + i)):
            name = f"{patient:08d}_000.png"
            write_image(nih / "images" / name, next(seed))
            rows.append(nih_row(name, labels, patient, 30 + i))
    (nih / "Data_Entry_2017.csv").write_text(NIH_HEADER + "".join(rows))
    hannover = hannover_layout(Path("data/raw/hannover-covid-19"), [])
    june_layout(Path("data/raw/covid-chestxray-dataset-2020-06-22"), [])
    write_params(merge={"per_class": {"normal": 4, "bacterial": 4, "viral": 4, "covid": 4}})
    return {"kermany": kermany, "covid": covid, "nih": nih, "hannover": hannover}


def write_awkward_files(folder, oversized, name=lambda i, kind, suffix: f"{kind}{suffix}"):
    """The fixed list of awkward files in `folder`: kind -> (file name, True if it is an image
    to keep as data, False if a reader must leave it out with a reason). `name` names the i-th
    file, so each reader's layout can label it; `oversized` is a PNG over PIL's pixel limit."""
    made = {}

    def path(kind, suffix, is_data):
        file = folder / name(len(made), kind, suffix)
        file.parent.mkdir(parents=True, exist_ok=True)
        made[kind] = (file.name, is_data)
        return file

    jpeg = write_image(path("truncated", ".jpeg", False), 700, "RGB", size=(64, 64))
    jpeg.write_bytes(jpeg.read_bytes()[:len(jpeg.read_bytes()) // 2])
    path("zero-byte", ".jpeg", False).write_bytes(b"")
    path("text", ".png", False).write_text("a text file named .png\n")
    shutil.copy(oversized, path("oversized", ".png", False))
    path("dangling", ".png", False).symlink_to("nowhere.png")
    looping = path("looping", ".png", False)
    looping.symlink_to(looping.name)
    write_image(path("16-bit", ".png", True), 701, "I;16")
    write_image(path("cmyk", ".jpeg", True), 702, "CMYK")
    write_image(path("palette", ".png", True), 703, "P")
    frames = [Image.fromarray(np.full((32, 40), v, np.uint8)) for v in (30, 220)]
    frames[0].save(path("multi-frame", ".gif", True), save_all=True, append_images=frames[1:])
    write_image(folder / "scratch.png", 704, "RGB").rename(path("png-named", ".jpeg", True))
    return made


@pytest.fixture(scope="session")
def oversized(tmp_path_factory):
    """A 14000 x 14000 PNG: 196 M pixels, over PIL's decompression-bomb limit, 220 KB on disk."""
    path = tmp_path_factory.mktemp("oversized") / "big.png"
    Image.fromarray(np.full((14000, 14000), 128, np.uint8)).save(path)
    return path


def pytest_collection_modifyitems(items):
    """The end-to-end file first: it is the longest, so `make test`'s worker that takes it (in
    collection order, --no-loadscope-reorder) starts it at once."""
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")  # stable: the rest in order
