"""confound: does the model see COVID-19, or the hospital the X-ray came from?

All normal, bacterial and viral images are of children from one hospital (Kermany); all COVID-19
images are of adults from many others (covid-chestxray-dataset). A model can score well by
telling the two sources apart. Two measurements:

1. Source probe: a logistic regression on the frozen backbone's features (what the head sees),
   cross-validated with whole patients per fold, predicting the source dataset. On the manifest
   the source is the COVID-19 label, so there it bounds what the head can learn; on the images
   without COVID-19 (the Kermany images, and the `confound.other_source` external set: adults
   with other findings from the COVID-19 images' source) it measures the source alone.
2. COVID-19 calls on the other source: the share of that set's images, none of which has
   COVID-19, that each task's model calls covid, against the share of the test split's
   non-COVID images. A model that sees pneumonia calls few of either; one that sees the source
   calls most of the other source's.

Writes metrics/detail/confound.json: the numbers, and the findings in plain words under `summary`.
"""

import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.external import external_features, external_rows
from covidxray.data.shards import read_features
from covidxray.errors import PipelineError
from covidxray.evaluation.confound import KERMANY, covid_calls, findings, non_covid_probe
from covidxray.evaluation.controls import linear_probe
from covidxray.files import write_json
from covidxray.paths import DETAIL, EXTERNAL_METRICS, MANIFEST, METRICS
from covidxray.runner import cli





def model_calls(task, other):
    """COVID-19 calls of one task's model on the other source and on the non-COVID test images."""
    test = pd.read_csv(METRICS / "predictions" / f"{task}.csv")
    return {"other_source": covid_calls(pd.read_csv(EXTERNAL_METRICS / task / f"{other}.csv")),
            "test_non_covid": covid_calls(test[test["actual"] != "covid"])}


def other_source_features(name):
    """The backbone's features of an external set's images, and its rows."""
    rows = external_rows(name)
    if (rows["class"] == "covid").any() or (rows["source"] == KERMANY).any():
        raise PipelineError(f"params.yaml: confound.other_source set {name!r} must hold no"
                            " COVID-19 images and none from the Kermany source")
    return external_features(name), rows








def main():
    params = load_params()
    spec, seed = params.confound, params.seed
    folds = spec.folds
    manifest, features = pd.read_csv(MANIFEST), read_features()["plain"]
    # among the tutorial's two sources the source is the COVID-19 label: this probe mixes both
    tutorial = manifest["source"].isin([KERMANY, "covid-chestxray"]).to_numpy()
    result = {"manifest": linear_probe(features[tutorial],
                                       (manifest.loc[tutorial, "source"] != KERMANY).to_numpy(),
                                       manifest.loc[tutorial, "patient"].to_numpy(), folds, seed),
              "other_source": spec.other_source}
    other = result["other_source"]
    if other:
        other_features, rows = other_source_features(other)
        result["non_covid"] = non_covid_probe(features, manifest, other_features, rows, folds, seed)
        result["models"] = {name: model_calls(name, other) for name, task in params.tasks.items()
                            if "covid" in task.classes}
        result["summary"] = findings(result["non_covid"], result["models"], other)
    else:
        result["summary"] = ["No confound.other_source set is given: only the probe on the"
                             " manifest, where the source is the COVID-19 label, was run."]
    write_json(DETAIL / "confound.json", result)
    for line in result["summary"]:
        print(f"confound: {line}")


if __name__ == "__main__":
    cli(main)()
