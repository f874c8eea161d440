"""Benchmark: the tutorial's recipe (bench/baseline.py) against this pipeline's `dvc repro`.

    python -m bench                     # about 1.5 hours on a 2-core CPU, most of it the recipe
    python -m bench --reuse-baseline    # the recipe's numbers from bench/RESULTS.json
    python -m bench --quick             # 2 epochs and 2 bank views, a few minutes

Both run in one temporary copy of this repository (your workspace is left alone), on the same
source data, split and backbone weights: first every stage of `dvc repro --force`, one at a
time so each is timed, then a no-change `dvc repro`, then the recipe for each of the tutorial's
tasks (BASELINE_TASKS; the others have no recipe to compare with).
Every command's peak memory is its process tree's largest resident set. Prints the table and
writes it with the machine and date to bench/RESULTS.md (bench/RESULTS-quick.md with --quick).
"""

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.workspace import ROOT, copy_repository, machine, raw_sources, timed

BASELINE_TASKS = ("binary", "three", "four")  # the tutorial's


def last_json(output):
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def stage_names(project, tasks):
    """dvc.yaml's stages in order, foreach stages expanded over the tasks."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return [f"{name}@{task}" if "foreach" in stage else name
            for name, stage in stages.items() for task in (tasks if "foreach" in stage else [0])]


def prepare_copy(project, quick):
    copy_repository(project)
    for source in raw_sources():
        shutil.copytree(ROOT / source, project / source)
    params = yaml.safe_load((project / "params.yaml").read_text())
    if quick:
        params["features"]["views"] = 2
        for task in params["tasks"].values():
            task["epochs"] = 2
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=bench", "-c",
                "user.email=bench@localhost", "commit", "-qm", "benchmark copy"]):
        subprocess.run(["git", *git], cwd=project, check=True)  # DVCLive needs a commit
    return params


def run_project(project, params, logs):
    python = [sys.executable, "-m"]
    stages = {}
    for stage in stage_names(project, list(params["tasks"])):
        print(f"bench: dvc repro --force --single-item {stage}", flush=True)
        stages[stage] = timed([*python, "dvc", "repro", "--force", "--single-item", stage],
                              project, logs / f"{stage}.log")
    noop = timed([*python, "dvc", "repro"], project, logs / "noop.log")
    return stages, noop


def run_baseline(project, params, logs):
    runs = {}
    for task in BASELINE_TASKS:
        print(f"bench: baseline {task}", flush=True)
        runs[task] = timed([sys.executable, "-m", "bench.baseline", task], project,
                           logs / f"baseline-{task}.log")
        runs[task]["result"] = last_json(runs[task]["output"])
    return runs


def reused_baseline(path):
    """The recipe's runs as an earlier full benchmark recorded them (its code is unchanged)."""
    earlier = json.loads(Path(path).read_text())
    return {row["task"]: {"seconds": row["baseline_seconds"], "peak_mib": row["baseline_peak_mib"],
                          "result": {"epochs": row["baseline_epochs"],
                                     "images_trained": row["baseline_images_per_s"],
                                     "train_seconds": 1.0,  # so the rate is the recorded one
                                     "test_accuracy": row["baseline_test_accuracy"]}}
            for row in earlier["tasks"] if "baseline_seconds" in row} | {
        # a reused run keeps the date the recipe ran, not that of the run that reused it
        "date": earlier.get("baseline_date") or earlier["date"]}


def train_seconds(output):
    """The fit's own time, from train's last line: `train <task>: ..., 41.5 s`."""
    return float(re.findall(r"^train \S+: .*, ([\d.]+) s$", output, re.MULTILINE)[-1])


def fitted(trained, epochs):
    """How the head was fitted, and the passes over the training images that counts: the
    epochs of Keras's fit, or one L-BFGS fit."""
    kept = trained["epochs_kept"]
    return (f"L-BFGS, {kept['lbfgs']} it.", 1) if "lbfgs" in kept else (epochs, epochs)


def summarise(project, params, stages, noop, baseline, hardware):
    rows, shared = [], [s for s in stages if "@" not in s]
    for task, spec in params["tasks"].items():
        trained = json.loads((project / "models" / f"{task}.json").read_text())
        tested = json.loads((project / "metrics" / "detail" / f"{task}.json").read_text())["test"]
        ours = [stages[f"train@{task}"], stages[f"evaluate@{task}"]]
        how, passes = fitted(trained, spec["epochs"])
        row = {"task": task, "epochs": how,
               "project_seconds": sum(s["seconds"] for s in ours),
               "project_images_per_s": passes * trained["train_images"]
               / max(train_seconds(stages[f"train@{task}"]["output"]), 1e-3),
               "project_peak_mib": max(s["peak_mib"] for s in ours),
               "project_test_accuracy": tested["accuracy"]}
        if task in baseline:
            base = baseline[task]
            row.update({"baseline_epochs": base["result"]["epochs"],
                        "baseline_seconds": base["seconds"],
                        "baseline_images_per_s": base["result"]["images_trained"]
                        / base["result"]["train_seconds"],
                        "baseline_peak_mib": base["peak_mib"],
                        "baseline_test_accuracy": base["result"]["test_accuracy"]})
        rows.append(row)
    features = stages["features"]["output"]
    bank_rate = float(features.rsplit("(", 1)[1].split()[0]) if "images/s" in features else None
    return {
        "tasks": rows,
        "shared_stages": {s: round(stages[s]["seconds"], 1) for s in shared},
        "baseline_date": baseline.get("date"),
        "total": {"baseline_seconds": sum(baseline[t]["seconds"] for t in BASELINE_TASKS),
                  "project_seconds": sum(s["seconds"] for s in stages.values()),
                  "baseline_peak_mib": max(baseline[t]["peak_mib"] for t in BASELINE_TASKS),
                  "project_peak_mib": max(s["peak_mib"] for s in stages.values())},
        "noop_repro_seconds": noop["seconds"],
        "features_images_per_s": bank_rate,
        "hardware": hardware,
    }


def table(summary):
    head = ("| task | epochs: baseline / project | wall s: baseline / project | ratio |"
            " train images/s: baseline /"
            " project | peak MiB: baseline / project | test accuracy: baseline / project |")
    lines = [head, "| --- " * 7 + "|"]
    for r in summary["tasks"]:
        base = {key: r.get(f"baseline_{key}") for key in
                ("epochs", "seconds", "images_per_s", "peak_mib", "test_accuracy")}
        if base["seconds"] is None:  # no recipe for this task
            base = dict.fromkeys(base, "-")
            ratio = "-"
        else:
            ratio = f"{r['project_seconds'] / base['seconds']:.3f}"
            base = {"epochs": base["epochs"], "seconds": f"{base['seconds']:.0f}",
                    "images_per_s": f"{base['images_per_s']:.1f}",
                    "peak_mib": f"{base['peak_mib']:.0f}",
                    "test_accuracy": f"{base['test_accuracy']:.3f}"}
        lines.append(
            f"| {r['task']} | {base['epochs']} / {r['epochs']}"
            f" | {base['seconds']} / {r['project_seconds']:.0f} | {ratio}"
            f" | {base['images_per_s']} / {r['project_images_per_s']:.0f}"
            f" | {base['peak_mib']} / {r['project_peak_mib']:.0f}"
            f" | {base['test_accuracy']} / {r['project_test_accuracy']:.3f} |")
    t = summary["total"]
    lines.append(
        f"| all (whole `dvc repro`; the recipe: {', '.join(BASELINE_TASKS)}) | |"
        f" {t['baseline_seconds']:.0f} / {t['project_seconds']:.0f}"
        f" | {t['project_seconds'] / t['baseline_seconds']:.3f} | |"
        f" {t['baseline_peak_mib']:.0f} / {t['project_peak_mib']:.0f} | |")
    return "\n".join(lines)


def report(summary, info, quick):
    hw = "\n".join(
        f"| {h['policy']} | {h['matmul_gflops']} | {h['vgg16_gflops_per_image']}"
        f" | {h['forward_limit_images_per_s']} | {h['forward_images_per_s']} | {threads} |"
        for threads, run in summary["hardware"].items() for h in run["results"])
    shared = ", ".join(f"{s} {v} s" for s, v in summary["shared_stages"].items())
    return f"""# Benchmark: the tutorial's recipe vs this pipeline

Made by `python -m bench{' --quick' if quick else ''}` on {info['date']}.
Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, GPU: {info['gpu']};
Python {info['python']}, {', '.join(f'{p} {v}' for p, v in info['packages'].items())}.

{table(summary)}

Project wall time per task is its train and evaluate stages; the stages all tasks share took
{shared}. The baseline's per-task time is one process: data, training and test{
f"; its numbers are those of the full run of {summary['baseline_date']} (--reuse-baseline)"
if summary['baseline_date'] else ""}.
Training images/s counts the augmented images each epoch trains on (an L-BFGS head: its training
images once, over the fit's seconds). A no-change `dvc repro`
took {summary['noop_repro_seconds']:.1f} s. The features stage ran the backbone at
{summary['features_images_per_s']} images/s.

The backbone's limit on this machine (VGG16 conv layers at the configured image size; forward
rate measured at the bank's batch size):

| dtype policy | matmul GFLOP/s | VGG16 GFLOP per image | forward limit, images/s | forward measured, images/s | threads |
| --- | --- | --- | --- | --- | --- |
{hw}
"""  # noqa: E501 (the hardware table's header row is one markdown line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs and 2 bank views")
    parser.add_argument("--keep", help="use this folder for the copy and keep it")
    parser.add_argument("--reuse-baseline", action="store_true",
                        help="take the recipe's runs from bench/RESULTS.json instead of rerunning")
    args = parser.parse_args()
    info = {**machine(), "date": datetime.date.today().isoformat()}
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(args.keep or scratch) / "project"
        logs = project.parent / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        params = prepare_copy(project, args.quick)
        hardware = {}
        for threads in ("default", "1"):
            args_ = [] if threads == "default" else [threads]
            probe = timed([sys.executable, "-m", "bench.hardware", *args_], project,
                          logs / f"hardware-{threads}.log")
            hardware[threads] = last_json(probe["output"])
        stages, noop = run_project(project, params, logs)
        baseline = (reused_baseline(ROOT / "bench" / "RESULTS.json") if args.reuse_baseline
                    else run_baseline(project, params, logs))
        summary = summarise(project, params, stages, noop, baseline, hardware)
    print(table(summary))
    name = "RESULTS-quick" if args.quick else "RESULTS"
    (ROOT / "bench" / f"{name}.md").write_text(report(summary, info, args.quick))
    (ROOT / "bench" / f"{name}.json").write_text(json.dumps({**info, **summary}, indent=2) + "\n")
    print(f"bench: wrote bench/{name}.md and bench/{name}.json")


if __name__ == "__main__":
    main()
