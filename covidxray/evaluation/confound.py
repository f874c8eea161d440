"""The source confound: can a linear probe on the frozen features tell the sources apart, and how
often does a task call images of a source without COVID-19 COVID-19? Findings in plain words."""

import numpy as np

from covidxray.evaluation.controls import linear_probe

KERMANY = "kermany"


def covid_calls(predictions):
    called = predictions["predicted"] == "covid"
    return {"n": len(predictions), "called_covid": int(called.sum()),
            "share": float(called.mean()) if len(predictions) else None,
            "mean_p_covid": float(predictions["p_covid"].mean()) if len(predictions) else None}


def verdict(auc):
    if auc is None:
        return "could not be measured (too few patients)"
    if auc >= 0.9:
        return "the source is plainly readable from the features, so a model can take that shortcut"
    if auc >= 0.7:
        return "the source is partly readable from the features"
    return "the source is hardly readable from the features"


def findings(probe, calls, other):
    auc = probe["auc"]
    lines = [f"A linear probe on the frozen backbone's features tells the {other} images (no"
             f" COVID-19) from the Kermany ones with a cross-validated AUC of"
             f" {'n/a' if auc is None else f'{auc:.2f}'} ({probe['n']} images, whole patients"
             f" per fold): {verdict(auc)}."]
    for task, c in calls.items():
        o, t = c["other_source"], c["test_non_covid"]
        lines.append(f"{task}: calls {o['called_covid']} of {o['n']} {other} images COVID-19,"
                     f" none of which has it, against {t['called_covid']} of {t['n']} non-COVID"
                     " test images.")
    return lines


def non_covid_probe(features, manifest, other_features, rows, folds, seed):
    """The source probe on images without COVID-19: Kermany's, and the other source's."""
    kermany = (manifest["source"] == KERMANY).to_numpy()
    return linear_probe(
        np.concatenate([features[kermany], other_features]),
        np.r_[np.zeros(kermany.sum(), bool), np.ones(len(rows), bool)],
        np.r_[manifest.loc[kermany, "patient"].to_numpy(), rows["patient"].to_numpy()],
        folds, seed)
