"""plots: per task, training curves, confusion matrix, ROC curves and two test-image galleries.

The second gallery overlays each test image with the Grad-CAM heatmap of its predicted class:
where in the X-ray the model found its evidence (covidxray/evaluation/gradcam.py).
Writes plots/<task>/{history,confusion,roc,gallery,gradcam}.png, and the leave-one-place-out
learning curve, plots/holdout/curve.png.
"""


import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from covidxray.config.params import load_params  # noqa: E402
from covidxray.data.provenance import trained_record  # noqa: E402
from covidxray.data.shards import prepared_images  # noqa: E402
from covidxray.data.splitting import read_split  # noqa: E402
from covidxray.evaluation.figures import confusion, gallery, region_curve, roc, save
from covidxray.evaluation.gradcam import gradcam, overlay  # noqa: E402
from covidxray.evaluation.scoring import scores  # noqa: E402
from covidxray.files import read_json  # noqa: E402
from covidxray.model.classifier import load_classifier  # noqa: E402
from covidxray.paths import DETAIL, METRICS, MODELS, PLOTS, TASK_PLOTS  # noqa: E402
from covidxray.runner import cli  # noqa: E402


def history(task, ax_acc, ax_loss):
    """The tutorial's curves: train vs validation accuracy and loss per epoch, from DVCLive; a
    head fitted by L-BFGS (one step logged) gets two bars instead, train and validation."""
    logs = METRICS / "train" / task / "plots" / "metrics"
    at_once = "lbfgs" in read_json(MODELS / f"{task}.json")["epochs_kept"]
    for ax, metric in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        curves = {label: pd.read_csv(logs / part / f"{metric}.tsv", sep="\t")
                  for part, label in (("train", "train"), ("eval", "validation"))}
        if at_once:
            ax.bar(list(curves), [curve[metric].iloc[0] for curve in curves.values()],
                   color=["C0", "C1"])
            ax.set(title=f"{task}: {metric} of the L-BFGS fit", ylabel=metric)
            continue
        for label, curve in curves.items():
            ax.plot(curve["step"] + 1, curve[metric], marker=".", label=label)
        ax.set(title=f"{task}: {metric}", xlabel="epoch", ylabel=metric)
        if metric == "loss":  # a first epoch's loss can be thousands of times the last's
            ax.set_yscale("log")
        ax.legend()










def plot_task(spec):
    task, classes = spec.name, list(spec.classes)
    out = PLOTS / task
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    history(task, ax_acc, ax_loss)
    save(fig, out / "history.png")

    predictions = pd.read_csv(METRICS / "predictions" / f"{task}.csv")
    labels = predictions["actual"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    metrics = scores(labels, predictions[[f"p_{c}" for c in classes]].to_numpy(), classes)
    low, high = metrics["accuracy_ci95"]
    for name, draw, data in (("confusion", confusion, metrics["confusion_matrix"]),
                             ("roc", roc, predictions)):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        draw(ax, data, classes,
             f"{task}\ntest accuracy {metrics['accuracy']:.2f} (95% CI {low:.2f}-{high:.2f})")
        save(fig, out / f"{name}.png")
    test = read_split("test", spec)  # the rows of the predictions, in their order
    images = prepared_images(test)
    gallery(predictions, images, out / "gallery.png")
    predicted = predictions["predicted"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    trained_record(task)  # the model is of today's split, as the predictions are
    heatmaps = gradcam(load_classifier(MODELS / f"{task}.keras"), images, predicted)
    gallery(predictions, [overlay(i, h) for i, h in zip(images, heatmaps)],
            out / "gradcam.png")


def holdout_curve(path):
    """Recall on the scored collection and false alarms on adults without COVID-19, against the
    training COVID-19 images: without the scored collection (a hospital it never saw) and with
    every one (unseen patients of hospitals it saw); and recall on a left-out region against
    the number of other regions trained on."""
    holdout = read_json(DETAIL / "holdout.json")
    curve, targets = pd.DataFrame(holdout["curve"]), holdout["targets"]
    by_regions = pd.DataFrame(holdout["curve_by_regions"])
    fig, axes = plt.subplots(1, 3 if len(by_regions) else 2, figsize=(15, 4))
    if len(by_regions):
        region_curve(axes[2], by_regions, holdout, targets)
    for ax, key, title in ((axes[0], "recall", "COVID-19 recall on the scored collection"),
                           (axes[1], "false_alarm", "adults without COVID-19 called COVID-19")):
        for trained_on, points in curve.groupby("trained_on"):
            ax.plot(points["train_covid"], points[key], marker="o",
                    label=f"trained on {trained_on}")
        ax.axhline(targets[key], linestyle=":", color="grey", label="target")
        ax.set(title=title, xlabel="training COVID-19 images (mean over splits)", ylabel="share",
               ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.suptitle(f"{holdout['task']}: leave one place out, {holdout['splits']} splits")
    save(fig, path)




def main():
    params = load_params()
    holdout_curve(PLOTS / "holdout" / "curve.png")
    print(f"plots: {PLOTS / 'holdout' / 'curve.png'}")
    for task, spec in params.tasks.items():
        plot_task(spec)
        print(f"plots: {PLOTS / task}/{{{','.join(TASK_PLOTS)}}}.png")


if __name__ == "__main__":
    cli(main)()
