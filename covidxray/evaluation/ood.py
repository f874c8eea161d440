"""Does this image look like the training X-rays? A classifier gives any input a class with
confidence, noise and photos included; this says when its answer is not worth reading.

Deep nearest neighbours (Sun et al. 2022): an image's backbone features, averaged over a grid
of `ood.grid` x `ood.grid` cells (so that where things are counts: an X-ray upside down is not
a frontal one) and L2-normalised, are compared with the training images'; its distance is the
cosine distance to the k-th nearest (`ood.neighbours`). The threshold is the `ood.keep`
quantile of the validation images' distances, so about 1 - keep of X-rays like the training ones
are flagged.
stages/ood.py builds the reference (models/ood.npz) and scores probe sets against it;
covidxray/app/prediction.py checks every predicted image with it.
"""

import json
from dataclasses import asdict, dataclass

import keras
import numpy as np
from sklearn.neighbors import NearestNeighbors

from covidxray.config.schema import Backbone, Preprocess
from covidxray.data.images import load_images
from covidxray.errors import PipelineError
from covidxray.files import read_npz, write_npz
from covidxray.model.backbone import fingerprint
from covidxray.model.batching import batch_slices
from covidxray.model.features import build_features_model, feature_batches, feature_pass
from covidxray.paths import MODELS

REFERENCE = MODELS / "ood.npz"
REBUILD = "rebuild it with `dvc repro ood`"
BATCH = 32  # images per forward pass when checking


def cell_directions(features, grid=1):
    """N x height x width x channels to N x grid² x channels: the mean over each of grid x grid
    cells, then each row scaled to unit length, so that distances compare directions, not
    brightness."""
    features = np.asarray(features, np.float32)
    height, width = features.shape[1:3]
    if grid > min(height, width):
        raise PipelineError(f"params.yaml: ood.grid is {grid}, but the backbone's feature map is"
                            f" {height} x {width} positions at this image_size; lower it")
    cells = [features[:, rows][:, :, cols].mean(axis=(1, 2))
             for rows in np.array_split(np.arange(height), grid)
             for cols in np.array_split(np.arange(width), grid)]
    vectors = np.concatenate(cells, axis=1)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def kth_distances(reference, vectors, k):
    """Each vector's cosine distance to its k-th nearest reference vector (the vectors are not
    in the reference: for validation and new images, not for the training images)."""
    if not len(vectors):
        return np.empty(0, np.float32)
    nearest = NearestNeighbors(n_neighbors=k, metric="cosine").fit(reference)
    return nearest.kneighbors(vectors)[0][:, -1].astype(np.float32)


def row_cell_directions(features, rows, grid, batch=1024):
    """pooled features of `rows` of a sharded array (the bank's plain view), a batch at a time:
    the whole feature maps of a large manifest need not fit in memory."""
    rows = np.asarray(rows)
    parts = [cell_directions(features[rows[part]], grid) for part in batch_slices(len(rows), batch)]
    return (np.concatenate(parts) if parts
            else np.empty((0, grid * grid * features.row_shape[-1]), np.float32))


@dataclass(frozen=True)
class Reference:
    """The training images' vectors, k, the threshold, and what made the vectors: the frozen
    backbone (its params and weights' fingerprint) and how images were decoded for it."""
    vectors: np.ndarray
    neighbours: int
    grid: int
    threshold: float
    backbone: Backbone  # precision resolved: the one the features were computed in
    size: int
    preprocess: Preprocess
    fingerprint: str

    def distances(self, vectors):
        return kth_distances(self.vectors, vectors, self.neighbours)

    def feature_distances(self, features):
        """distances of the extractor's feature maps, pooled as the reference's were."""
        return self.distances(cell_directions(features, self.grid))

    def why(self, distance):
        """Why an image of this distance gets no class, or None when it gets one."""
        if distance <= self.threshold:
            return None
        return (f"does not look like a frontal chest X-ray: distance {distance:.3f} above the"
                f" threshold {self.threshold:.3f} set on validation")


def threshold(train, val, ood):
    """The `ood.keep` quantile of the val vectors' distances to the train vectors."""
    if len(train) < ood.neighbours:
        raise PipelineError(f"params.yaml: ood.neighbours is {ood.neighbours}, but the split"
                            f" has {len(train)} training image(s); lower it")
    distances = kth_distances(train, val, ood.neighbours)
    if not len(distances):
        raise PipelineError("data/split/val.csv: no validation images to set the ood"
                            " threshold on; raise split.val_fraction")
    return float(np.quantile(distances, ood.keep))


def fit(train, val, ood, **made_with):
    """The Reference of train vectors and its threshold; made_with: Reference's backbone, size,
    preprocess and fingerprint."""
    return Reference(train, ood.neighbours, ood.grid, threshold(train, val, ood), **made_with)


def write_reference(reference, path=REFERENCE):
    made = {"backbone": asdict(reference.backbone), "size": reference.size,
            "preprocess": asdict(reference.preprocess), "fingerprint": reference.fingerprint}
    write_npz(path, {"vectors": reference.vectors, "neighbours": np.array(reference.neighbours),
                     "grid": np.array(reference.grid),
                     "threshold": np.array(reference.threshold),
                     "made_with": np.array(json.dumps(made, sort_keys=True))})


def read_reference(path=REFERENCE):
    arrays = read_npz(path, "ood")
    try:
        made = json.loads(str(arrays["made_with"]))
        return Reference(arrays["vectors"], int(arrays["neighbours"]), int(arrays["grid"]),
                         float(arrays["threshold"]), Backbone(**made["backbone"]), made["size"],
                         Preprocess(**made["preprocess"]), made["fingerprint"])
    except (KeyError, TypeError, ValueError) as err:
        raise PipelineError(f"{path}: not a reference of the ood stage ({err!r});"
                            f" {REBUILD}") from err


@dataclass(frozen=True)
class XrayCheck:
    """A Reference and the frozen extractor that made its vectors, built once."""
    reference: Reference
    model: object  # bank.feature_pass of the extractor
    extractor: object = None  # the extractor itself, which a frozen classifier may share

    def decode(self, paths):
        """Images decoded as the reference's were."""
        return load_images(paths, self.reference.size, self.reference.preprocess)

    def distances(self, images):
        if not len(images):
            return np.empty(0, np.float32)
        features = np.concatenate(list(feature_batches(self.model, images, BATCH)))
        return self.reference.feature_distances(features)

    def unreliable(self, images):
        """Per image (decoded as the reference's were), why its class is not to be read, or
        None."""
        return [self.reference.why(d) for d in self.distances(images)]

    def unreliable_features(self, features):
        """The same from the images' features, as the extractor gives them."""
        return [self.reference.why(d) for d in self.reference.feature_distances(features)]


def load_xray_check(path=REFERENCE, extractor=None):
    """The XrayCheck of models/ood.npz, or None where there is none. `extractor`, a frozen
    classifier's own VGG16, serves when it is the network that made the reference (same weights,
    output and precision): predict then builds one VGG16, not two. Otherwise the extractor is
    rebuilt from the recorded params and refused if its weights are not those that made the
    reference."""
    if not path.is_file():
        return None
    reference = read_reference(path)
    if extractor is None or not made(reference, extractor):
        extractor = build_features_model(reference.backbone, reference.size)
        if fingerprint(extractor) != reference.fingerprint:
            raise PipelineError(f"{path}: made with other VGG16 weights than backbone.weights"
                                f" {reference.backbone.weights!r} gives here; {REBUILD}")
    return XrayCheck(reference, feature_pass(extractor), extractor)


def made(reference, extractor):
    """Whether `extractor` computes the reference's features: its input size, precision and
    weights (which are those of VGG16 up to the reference's feature block, and only those)."""
    vgg = [layer for layer in extractor.layers if isinstance(layer, keras.Model)]
    # the policy of the layers that compute: a loaded model's own says float32 whatever theirs
    policies = {layer.dtype_policy.name for model in vgg for layer in model.layers if layer.weights}
    return (tuple(extractor.input_shape[1:3]) == (reference.size, reference.size)
            and len(vgg) == 1 and policies == {reference.backbone.precision}
            and fingerprint(extractor) == reference.fingerprint)


def flag_counts(ref, keep, distances, skipped):
    sets = {name: {"n": len(d), "flagged": int((d > ref.threshold).sum()),
                   "share_flagged": round(float((d > ref.threshold).mean()), 4) if len(d)
                   else None,
                   "median_distance": round(float(np.median(d)), 4) if len(d) else None}
            for name, d in distances.items()}
    return {"threshold": round(ref.threshold, 6), "neighbours": ref.neighbours, "grid": ref.grid,
            "keep": keep,
            "reference_images": len(ref.vectors), "sets": sets, "n_skipped": len(skipped),
            "skipped": skipped}
