"""The external sets as the pipeline stored them: their rows and decoded images (the external
stage's data/external/<set>.csv and .npz) and their images' plain features (the features stage's
data/external_features/<set>.npz), in the same order."""

import pandas as pd

from covidxray.data.provenance import read_arrays
from covidxray.paths import EXTERNAL, EXTERNAL_FEATURES


def external_rows(name):
    """The rows of external set `name`, in its images' order."""
    return pd.read_csv(EXTERNAL / f"{name}.csv")


def external_images(name):
    """The decoded images of external set `name`, N x size x size x 3 uint8."""
    return read_arrays(EXTERNAL / f"{name}.npz", "external")["images"]


def external_features(name):
    """The plain features of external set `name`'s images, as the bank stores the manifest's."""
    return read_arrays(EXTERNAL_FEATURES / f"{name}.npz", "features")["features"]
