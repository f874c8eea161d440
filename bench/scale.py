"""Scale benchmark: each stage's seconds and peak memory against the number of images.

    python -m bench.scale                        # 500, 2,000 and 8,000 images: about 40 min
    python -m bench.scale --sizes 200 400        # a quick look

For each size it builds a synthetic dataset from the mirror in a throwaway copy of this
repository: copies of the Kermany and COVID-19 images, each source image re-encoded as JPEG
once and every copy given its own patient id and its own bytes (a JPEG comment holds the copy's
number), a quarter of the images a class. The pipeline runs with a small bank (one augmented
view and the plain one), the four-class task, one split in repeat and 5 epochs; every stage
from merge through evaluate runs its dvc.yaml command, timed, with the peak resident memory of
its largest process. prepare runs once more on one core (taskset) for the decode speed-up.

Writes bench/scale.csv and bench/scale.png, and prints the table in Markdown with what it
predicts, by a straight line through the two largest sizes, for NIH ChestX-ray14's 112,120.
"""

import argparse
import csv
import io
import shutil
import struct
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from bench.workspace import ROOT, copy_repository, machine, timed
from covidxray.data.sources import COVID_COLUMNS

MIRROR = ROOT.parent / "shared" / "datasets"
STAGES = ("merge", "split", "prepare", "features", "train@four", "repeat", "evaluate@four")
NIH_IMAGES = 112_120


def jpeg(path):
    """The image re-encoded as a JPEG (greyscale, as the X-rays are), in memory."""
    out = io.BytesIO()
    with Image.open(path) as img:
        img.convert("L").save(out, "JPEG", quality=85)
    return out.getvalue()


def with_comment(data, text):
    """The JPEG's bytes with a comment segment after its start marker: the same pixels, other
    bytes, so merge keeps every copy (it drops byte-identical files)."""
    comment = text.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def originals(mirror):
    """Each class's source images from the mirror, re-encoded once."""
    kermany = mirror / "chest-xray-pneumonia" / "chest_xray" / "train"
    pneumonia = sorted((kermany / "PNEUMONIA").iterdir())
    covid = mirror / "covid-chestxray-dataset"
    table = pd.read_csv(covid / "metadata.csv")
    pa = table[(table["finding"] == "COVID-19") & (table["view"] == "PA")]
    paths = {"normal": sorted((kermany / "NORMAL").iterdir()),
             "bacterial": [p for p in pneumonia if "_bacteria_" in p.name],
             "viral": [p for p in pneumonia if "_virus_" in p.name],
             "covid": [p for p in (covid / "images" / name for name in pa["filename"])
                       if p.is_file()]}
    return {cls: [jpeg(p) for p in found] for cls, found in paths.items()}


def write_sources(raw, images, per_class):
    """The Kaggle and COVID-19 dataset layouts under raw, per_class images a class, each copy its
    own patient: IM-<n> (normal), person<n> (pneumonia), covid patient s<n>."""
    kermany = raw / "chest-xray-pneumonia" / "chest_xray" / "train"
    covid = raw / "covid-chestxray-dataset"
    for folder in (kermany / "NORMAL", kermany / "PNEUMONIA", covid / "images"):
        folder.mkdir(parents=True)
    names = {"normal": "NORMAL/IM-{n:06d}-0001.jpeg",
             "bacterial": "PNEUMONIA/person{n}_bacteria_1.jpeg",
             "viral": "PNEUMONIA/person{n}_virus_1.jpeg"}
    rows = []
    for offset, (cls, sources) in enumerate(images.items()):
        for k in range(per_class):
            n = offset * per_class + k  # unique over the classes: one patient, one image
            data = with_comment(sources[k % len(sources)], f"synthetic copy {n}")
            if cls == "covid":
                rows.append({"Patientid": f"s{n}", "age": "", "finding": "COVID-19", "view": "PA",
                             "modality": "X-ray", "filename": f"synthetic-{n}.jpeg"})
                (covid / "images" / rows[-1]["filename"]).write_bytes(data)
            else:
                (kermany / names[cls].format(n=n)).write_bytes(data)
    with open(covid / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COVID_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def scale_params(project, per_class):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["merge"]["per_class"] = dict.fromkeys(("normal", "bacterial", "viral", "covid"),
                                                 per_class)
    params["merge"]["nih"] = params["merge"]["hannover"] = None
    params["split"]["separately"] = []
    params["features"].update(views=1, plain_view=True)
    params["repeat"]["splits"] = 1
    params["external"] = {}
    params["tasks"] = {"four": {**params["tasks"]["four"], "epochs": 5}}
    # the stages after evaluate are not timed, but their params must name what is left
    params["controls"].update(task="four", children=None)
    params["confound"]["other_source"] = None
    params["holdout"].update(task="four", sources=["covid-chestxray"], within_source=None)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commands(project):
    """Each benchmarked stage's command, as dvc.yaml has it."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    out = {}
    for name in STAGES:
        stage, _, task = name.partition("@")
        spec = stages[stage].get("do", stages[stage])
        out[name] = spec["cmd"].replace("${key}", task).split()
    return out


def run_size(size, images, logs):
    """Every stage's seconds and peak MiB on `size` images (size // 4 a class)."""
    per_class = size // 4
    with tempfile.TemporaryDirectory(prefix=f"scale-{size}-") as folder:
        project = Path(folder)
        copy_repository(project)
        write_sources(project / "data" / "raw", images, per_class)
        scale_params(project, per_class)
        rows = []
        for name, command in commands(project).items():
            print(f"scale: {size} images: {name}", flush=True)
            run = timed(command, project, logs / f"{size}-{name}.log")
            rows.append({"images": 4 * per_class, "stage": name, "seconds": run["seconds"],
                         "peak_mib": run["peak_mib"]})
        if shutil.which("taskset"):
            one = timed(["taskset", "-c", "0", *commands(project)["prepare"]], project,
                        logs / f"{size}-prepare-1core.log")
            rows.append({"images": 4 * per_class, "stage": "prepare on 1 core",
                         "seconds": one["seconds"], "peak_mib": one["peak_mib"]})
    return rows


def predicted(table, images=NIH_IMAGES):
    """Each stage's seconds at `images`, on the line through its two largest measured sizes."""
    out = {}
    for stage, rows in table.groupby("stage", sort=False):
        rows = rows.sort_values("images").tail(2)
        (x0, y0), (x1, y1) = rows[["images", "seconds"]].to_numpy()
        out[stage] = y1 + (y1 - y0) / (x1 - x0) * (images - x1)
    return out


def markdown(table):
    sizes = sorted(table["images"].unique())
    forecast = predicted(table)
    head = (["stage"] + [f"{n:,} images: s / peak MiB" for n in sizes]
            + [f"{NIH_IMAGES:,} images: s (predicted)"])
    lines = ["| " + " | ".join(head) + " |", "| --- " * len(head) + "|"]
    for stage, rows in table.groupby("stage", sort=False):
        cells = [f"{r.seconds:.0f} / {r.peak_mib:.0f}"
                 for r in rows.sort_values("images").itertuples()]
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {forecast[stage]:,.0f} |")
    return "\n".join(lines)


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (seconds, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage, rows in table.groupby("stage", sort=False):
        rows = rows.sort_values("images")
        seconds.plot(rows["images"], rows["seconds"], "o-", label=stage)
        memory.plot(rows["images"], rows["peak_mib"], "o-", label=stage)
    seconds.set(xscale="log", yscale="log", xlabel="images", ylabel="seconds",
                title="Time per stage")
    memory.set(xscale="log", xlabel="images", ylabel="peak resident MiB",
               title="Peak memory per stage", ylim=(0, None))
    sizes = sorted(table["images"].unique())
    for axes in (seconds, memory):
        axes.set_xticks(sizes, [f"{n:,}" for n in sizes])
        axes.minorticks_off()
    memory.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    parser.add_argument("--mirror", type=Path, default=MIRROR)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "scale")
    args = parser.parse_args()
    images = originals(args.mirror)
    logs = Path(tempfile.mkdtemp(prefix="scale-logs-"))
    rows = []
    for size in sorted(args.sizes):
        rows += run_size(size, images, logs)
        table = pd.DataFrame(rows)
        table.to_csv(args.out.with_suffix(".csv"), index=False)  # kept if a later size fails
    info = machine()
    print(f"\nMachine: {info['cpu']}, {info['cores']} cores, GPU: {info['gpu']}; logs in {logs}\n")
    print(markdown(table))
    if len(args.sizes) > 1:
        plot(table, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
