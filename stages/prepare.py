"""prepare: decode and resize every manifest image once, so no later stage touches a source file.

The Kaggle images are up to 2500 px a side; decoding them every epoch cost more than the model.
Writes data/prepared/images.npz holding `images`, uint8 of N x size x size x 3, in the row order
of the manifest. It does not depend on the split, so a new split (or `repeat`) decodes nothing.
"""

import numpy as np
import pandas as pd

from covidxray.common import MANIFEST, PREPARED_IMAGES, cli, load_images, load_params, whole_number
from covidxray.model import MIN_SIZE


def main():
    params = load_params()
    size = whole_number(params["image_size"], "image_size", MIN_SIZE)
    images = load_images(pd.read_csv(MANIFEST)["path"], size)
    PREPARED_IMAGES.parent.mkdir(parents=True, exist_ok=True)
    np.savez(PREPARED_IMAGES, images=images)
    print(f"prepare: {len(images)} images at {size}x{size}")


if __name__ == "__main__":
    cli(main)()
