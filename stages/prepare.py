"""prepare: decode and resize every split image once, so no later stage touches a source file.

The Kaggle images are up to 2500 px a side; decoding them every epoch cost more than the model.
Writes data/prepared/<split>.npz holding `images`, uint8 of N x size x size x 3, in the row
order of data/split/<split>.csv.
"""

import numpy as np
import pandas as pd

from stages.common import (PREPARED, SPLIT_DIR, SPLITS, cli, load_images, load_params,
                           whole_number)
from stages.model import MIN_SIZE


def main():
    params = load_params()
    size = whole_number(params["image_size"], "image_size", MIN_SIZE)
    PREPARED.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        rows = pd.read_csv(SPLIT_DIR / f"{name}.csv")
        images = load_images(rows["path"], size)
        np.savez(PREPARED / f"{name}.npz", images=images)
        print(f"prepare: {name:5s} {len(images):4d} images at {size}x{size}")


if __name__ == "__main__":
    cli(main)()
