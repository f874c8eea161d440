"""Where each input and output of the pipeline lives, relative to the repository root."""

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
PARAMS_CHECKED = Path("data/params-checked.txt")  # the check stage's mark that the params passed
RAW = Path("data/raw")
MANIFEST = Path("data/merged/manifest.csv")
SPLIT_DIR = Path("data/split")
SPLITS = ("train", "val", "test")
PREPARED_IMAGES = Path("data/prepared/images")  # every manifest image, decoded, in its order
FEATURES = Path("data/features")  # their backbone features: plain/ and the bank's view-NN/
EXTERNAL = Path("data/external")  # the extra evaluation sets, decoded (stages/external.py)
EXTERNAL_FEATURES = Path("data/external_features")  # their plain features (stages/features.py)
MODELS = Path("models")
METRICS = Path("metrics")  # each task's headline and the holdout verdict's: `dvc metrics show`
DETAIL = METRICS / "detail"  # what they are made from, and every other stage's numbers
EXTERNAL_METRICS = DETAIL / "external"  # evaluate's scores of each external set
PLOTS = Path("plots")
TASK_PLOTS = ("history", "confusion", "roc", "gallery", "gradcam")  # plots/<task>/<name>.png
