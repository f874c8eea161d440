"""The run report's HTML: a summary of every task first, then the leave-one-place-out
verdict, the data, each task's tables and plots, the shortcut checks and the check of inputs
that are not frontal chest X-rays (stages/report.py puts them on one page)."""

import base64
import html
from pathlib import Path

import pandas as pd

from covidxray.evaluation.headline import interval, number, task_verdict
from covidxray.evaluation.scoring import METRIC_KEYS
from covidxray.files import read_json
from covidxray.paths import DETAIL, EXTERNAL_METRICS, METRICS, MODELS, PLOTS, TASK_PLOTS

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;white-space:nowrap}.verdicts td:last-child{text-align:left;white-space:normal}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}
.note{color:#555}"""


def table(rows):
    return pd.DataFrame(rows).to_html(index=False, border=0, na_rep="n/a")


def image(path, alt):
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def test_rows(metrics):
    test = metrics["test"]
    return [{"images": test["n"], "accuracy": number(test["accuracy"]),
             "95% CI (Wilson)": interval(*test["accuracy_ci95"]), "ROC AUC": number(test["auc"]),
             "log loss": number(test["loss"]), "val accuracy": number(metrics["val"]["accuracy"])}]


def class_rows(metrics):
    return [{"class": cls, **{key: number(value) if key != "support" else value
                              for key, value in scores.items()}}
            for cls, scores in metrics["test"]["per_class"].items()]


def repeat_rows(repeat):
    """Mean, sd and range over the splits of the head's metrics beside the reference model's:
    validation (what the head was chosen by), test, then each class's test recall."""
    def rows(model):
        result = repeat[model]
        named = [(f"val {key}", result["val"][key]) for key in ("accuracy", "loss")]
        named += [(f"test {key}", result["test"][key]) for key in METRIC_KEYS]
        return named + [(f"test recall {cls}", s["recall"])
                        for cls, s in result["test"]["per_class"].items()]

    return [{"metric": name, "mean": number(s["mean"]), "sd": number(s["sd"]),
             "min": number(s["min"]), "max": number(s["max"]),
             "reference mean": number(r["mean"]), "reference sd": number(r["sd"])}
            for (name, s), (_, r) in zip(rows("head"), rows("reference"))]


def repeat_section(repeat):
    if "skipped" in repeat:
        return ["<h3>Repeated splits</h3>", f"<p>{html.escape(repeat['skipped'])}</p>"]
    return [f"<h3>Over {repeat['splits']} splits (seeds {', '.join(map(str, repeat['seeds']))})"
            "</h3>", "<p class='note'>The trained head beside the reference model, a logistic"
            " regression on the same features and splits.</p>", table(repeat_rows(repeat))]


def external_table(task, sets):
    rows = []
    for name in sets:
        m = read_json(EXTERNAL_METRICS / task / f"{name}.json")
        rows.append({"set": name, "images": m["n"],
                     "accuracy": number(m.get("accuracy")),
                     "95% CI": interval(*m["accuracy_ci95"]) if m["n"] else "n/a",
                     "classes absent": ", ".join(m["absent_classes"]) or "none",
                     "outside the task": ", ".join(f"{c} {n}" for c, n in
                                                   m["outside_task"].items()) or "none"})
    return rows


def source_rows(metrics):
    """Test recall and COVID-19 calls per (class, source, age group)."""
    return [{"class/source/age": group, "images": g["n"], "recall": number(g.get("recall")),
             "called COVID-19": number(g.get("called_covid"))}
            for group, g in metrics["test"]["by_source"]["groups"].items()]


def alarm_rows(task, metrics, repeat, sets):
    """The share of adults without COVID-19 called COVID-19: on the test split, over the
    repeated splits and on each external set."""
    found = [("test split", metrics["test"]["by_source"])]
    found += [(f"external {name}", read_json(EXTERNAL_METRICS / task / f"{name}.json")["by_source"])
              for name in sets]
    rows = [{"images": where, "adults without COVID-19": b["adult_false_alarm_n"],
             "share called COVID-19": number(b["adult_false_alarm"])} for where, b in found]
    over = None if "skipped" in repeat else repeat["head"]["test"]["by_source"]["adult_false_alarm"]
    if over:
        rows.insert(1, {"images": f"test, {repeat['splits']} splits",
                        "adults without COVID-19": "",
                        "share called COVID-19": f"{over['mean']:.3f} ± {over['sd']:.3f}"})
    return rows


def describe_head(trained):
    """The trained head in a few words, from models/<task>.json."""
    head = trained["head"]
    layers = f"Dense({head['units']}, relu) then linear" if head["units"] else "linear"
    blocks = trained["backbone"]["trainable_blocks"]
    prep = trained["preprocess"]
    images = ", ".join([f"{prep['crop']:.0%} of each side cropped"] * bool(prep["crop"])
                       + [f"CLAHE {prep['clahe']}"] * bool(prep["clahe"]))
    floor = f" (variance floor {head['variance_floor']})" if head["variance_floor"] else ""
    scaling = f"standardised{floor}, " if head["normalize"] else ""
    return ((f"images: {images}; " if images else "")
            + f"{head['pooling']} pooling, {scaling}{layers},"
            f" {fitting(trained)}"
            + (f", VGG16's last {blocks} block(s) fine-tuned" if blocks else ""))


def fitting(trained):
    """How the head was fitted: by L-BFGS at once (dropout does not apply), or by epochs of
    Keras's fit."""
    head, kept = trained["head"], trained["epochs_kept"]
    weights = f"L2 {head['l2']}, class weights {head['class_weight']}"
    if "lbfgs" in kept:
        return f"{weights}, fitted by L-BFGS in {kept['lbfgs']} iterations"
    return f"dropout {head['dropout']}, {weights}, epochs kept {kept}"


def task_section(task, classes, sets):
    metrics, trained = read_json(DETAIL / f"{task}.json"), read_json(MODELS / f"{task}.json")
    repeat = read_json(DETAIL / "repeat.json")[task]
    parts = [
        f"<h2 id='{task}'>{task}: {', '.join(classes)}</h2>",
        f"<p class='note'>backbone {html.escape(trained['backbone']['weights'])}"
        f" ({trained['backbone']['precision']}, fingerprint"
        f" {trained['backbone']['fingerprint'][:12]}), trained on {trained['device']},"
        f" {trained['train_images']} training images; head"
        f" {html.escape(describe_head(trained))}</p>",
        "<h3>Test split</h3>", table(test_rows(metrics)), table(class_rows(metrics)),
        *repeat_section(repeat),
    ]
    if sets:
        parts += ["<h3>External sets</h3>", table(external_table(task, sets))]
    parts += ["<h3>By source and age</h3>", "<p class='note'>All normal, bacterial and viral"
              " images of the tutorial's sources are children's, all COVID-19 images adults'. A"
              " model that learned age or hospital instead of pneumonia calls adults without"
              " COVID-19 COVID-19 (n/a: the task has no covid class or no such images).</p>",
              table(source_rows(metrics)), table(alarm_rows(task, metrics, repeat, sets))]
    parts += [image(PLOTS / task / f"{name}.png", f"{task} {name}") for name in TASK_PLOTS]
    return "\n".join(parts)


def confound_section():
    confound = read_json(DETAIL / "confound.json")
    probes = [{"probe": name, **{k: number(v) if isinstance(v, float) else v
                                 for k, v in confound[name].items()}}
              for name in ("manifest", "non_covid") if name in confound]
    return "\n".join(["<h2 id='confound'>Source confound check</h2>",
                      *(f"<p>{html.escape(line)}</p>" for line in confound["summary"]),
                      table(probes)])


def controls_section():
    controls = read_json(DETAIL / "controls.json")
    probes = [{"images": name, **{k: number(v) if isinstance(v, float) or v is None else v
                                  for k, v in p.items()}}
              for name, p in controls["probe"].items()]
    shares = [{"class/source/age": group, "Grad-CAM mass in the lung field": number(share)}
              for group, share in controls["gradcam_lung_share"]["groups"].items()]
    return "\n".join([f"<h2 id='controls'>Shortcut controls ({controls['task']})</h2>",
                      *(f"<p>{html.escape(line)}</p>" for line in controls["summary"]),
                      table(probes), table(shares)])


def ood_section():
    """How the check predict runs (not a frontal chest X-ray?) does on each probe set."""
    ood = read_json(DETAIL / "ood.json")
    rows = [{"images": name, "n": s["n"], "flagged": s["flagged"],
             "share flagged": number(s["share_flagged"]),
             "median distance": number(s["median_distance"])} for name, s in ood["sets"].items()]
    return "\n".join([
        "<h2 id='ood'>Not a frontal chest X-ray?</h2>",
        f"<p class='note'>predict gives no class to an image whose cosine distance to its"
        f" k-th nearest training X-ray (k = {ood['neighbours']}; VGG16's features averaged over"
        f" {ood['grid']} x {ood['grid']} cells) is above"
        f" {ood['threshold']:.4f}, the {ood['keep']} quantile of the validation images'"
        " distances. The test split and the external sets are frontal chest X-rays (few should"
        " be flagged); lateral, CT, photos, text and noise are not.</p>",
        table(rows), image(DETAIL / "ood.png", "ood distances")])


def holdout_table(holdout):
    """Per left-out place, a collection or a region of one (and for every source together),
    test and validation recall and false alarms with their intervals, and the within-place
    AUC."""
    rows = []
    for name, s in [*holdout["left_out"].items(), ("none (every source trains)",
                                                    holdout["every_source"])]:
        test, within = s["test"], s["test"].get("within_source")
        rows.append({
            "left out": f"{name} ({s['collection']})" if "collection" in s else name,
            "test recall": spread_cell(test["recall"]),
            "95% CI": interval(*test["recall_ci95"]), "COVID-19 images": test["recall_images"],
            "test false alarms": spread_cell(test["false_alarm"]),
            "95% CI ": interval(*test["false_alarm_ci95"]),
            "within-source AUC": spread_cell(within["auc"]) if within else "n/a",
            "AUC 95% CI": interval(*within["auc_ci95"]) if within else "n/a",
            "val recall": spread_cell(s["val"]["recall"]),
            "val false alarms": spread_cell(s["val"]["false_alarm"])})
    return rows


def spread_cell(s):
    return "n/a" if s is None else f"{s['mean']:.2f} ± {s['sd']:.2f}"


def holdout_section():
    """The headline: the task trained without each COVID-19 collection and region, scored on
    it."""
    holdout = read_json(DETAIL / "holdout.json")
    return "\n".join([
        f"<h2 id='holdout'>Leave one place out ({holdout['task']})</h2>",
        *(f"<p>{html.escape(line)}</p>" for line in holdout["summary"]),
        "<p class='note'>Recall: the left-out source's COVID-19 X-rays outside its validation"
        " patients (test) or of them (val); false alarms: the split's adults without COVID-19;"
        " mean ± sd over the splits, 95% intervals over the distinct images scored. The last"
        " row trains on every source and is scored on unseen patients of hospitals it saw.</p>",
        table(holdout_table(holdout)), image(PLOTS / "holdout" / "curve.png", "holdout curve")])


def data_section():
    data = read_json(DETAIL / "data.json")
    rows = [{"class": cls, **counts} for cls, counts in data["classes"].items()]
    return "\n".join(["<h2 id='data'>Data</h2>", table(rows),
                      f"<p>{data['total']} images of {data['patients']} patients;"
                      f" {data['n_skipped']} file(s) skipped and {data['n_duplicates']}"
                      " duplicate(s) dropped (metrics/detail/data.json lists them).</p>"])


def summary_rows(tasks):
    """Per task: the headline of metrics/<task>.json and its verdict in a sentence."""
    rows = []
    for task in tasks:
        h = read_json(METRICS / f"{task}.json")
        rows.append({"task": f"<a href='#{task}'>{task}</a>",
                     "test accuracy (95% CI)": f"{h['accuracy']:.2f}"
                     f" ({interval(h['ci95_low'], h['ci95_high'])})",
                     "COVID-19 found": number(h["covid_recall"]),
                     "adults without COVID-19 called COVID-19": number(h["false_alarm"]),
                     "verdict": html.escape(task_verdict(h))})
    return rows


def summary_section(tasks):
    """What a reader came for: does each model find COVID-19, and what does it wrongly call
    COVID-19 (adults without it from the test split and the external sets)."""
    holdout = read_json(DETAIL / "holdout.json")
    return "\n".join([
        "<h2 id='summary'>Summary</h2>",
        pd.DataFrame(summary_rows(tasks)).to_html(index=False, border=0, na_rep="n/a",
                                                  escape=False, classes="verdicts"),
        f"<p><b>On a hospital the model never saw ({html.escape(holdout['task'])}):</b>"
        f" {html.escape(holdout['summary'][0])}</p>"])
