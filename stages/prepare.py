"""prepare: decode and resize every manifest image once, so no later stage touches a source file.

The Kaggle images are up to 2500 px a side; decoding them every epoch cost more than the model.
Writes data/prepared/images/, a sharded array (covidxray/data/shards.py) of uint8 size x size x 3
images in the row order of the manifest, after `preprocess` (the border crop and CLAHE, when
set), `shard_size` images a file: it holds one shard, not every image. It does not depend on the
split, so a new split (or `repeat`) decodes nothing.
"""

import time

import pandas as pd

from covidxray.errors import PipelineError

from covidxray.config.params import load_params
from covidxray.data.images import cores, decode_all
from covidxray.data.provenance import manifest_digest
from covidxray.data.shards import write_shards
from covidxray.files import replacing_folder, sha256
from covidxray.paths import MANIFEST, PREPARED_IMAGES
from covidxray.runner import cli


def check_unchanged(manifest):
    """Each file still holds the bytes merge described: run outside DVC, prepare could otherwise
    decode a replaced image under the old one's label."""
    for row in manifest.itertuples():
        try:
            same = sha256(row.path) == row.sha256
        except OSError as err:
            raise PipelineError(f"{row.path}: cannot read ({err}); run `dvc repro merge`") from err
        if not same:
            raise PipelineError(f"{row.path}: changed since merge wrote {MANIFEST};"
                                " run `dvc repro merge`")


def main():
    params = load_params()
    size, preprocess, workers = params.image_size, params.preprocess, cores()
    manifest = pd.read_csv(MANIFEST)
    check_unchanged(manifest)
    started = time.perf_counter()
    with replacing_folder(PREPARED_IMAGES, needs=len(manifest) * size * size * 3) as folder:
        images = decode_all(manifest["path"], size, preprocess, workers)
        n = write_shards(folder, (image[None] for image in images), (size, size, 3), "uint8",
                         params.shard_size, manifest_digest())
    print(f"prepare: {n} images at {size}x{size}, crop {preprocess.crop},"
          f" CLAHE {preprocess.clahe or 'off'}, decoded on {workers} core(s) in"
          f" {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    cli(main)()
