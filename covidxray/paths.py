"""Where each input and output of the pipeline lives, relative to the repository root."""

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
RAW = Path("data/raw")
MANIFEST = Path("data/merged/manifest.csv")
SPLIT_DIR = Path("data/split")
SPLITS = ("train", "val", "test")
PREPARED_IMAGES = Path("data/prepared/images")  # every manifest image, decoded, in its order
FEATURES = Path("data/features")  # their backbone features: plain/ and the bank's view-NN/
EXTERNAL = Path("data/external")  # the extra evaluation sets, decoded (stages/external.py)
MODELS = Path("models")
METRICS = Path("metrics")
EXTERNAL_METRICS = METRICS / "external"  # evaluate's scores of each external set
PLOTS = Path("plots")
TASK_PLOTS = ("history", "confusion", "roc", "gallery", "gradcam")  # plots/<task>/<name>.png
