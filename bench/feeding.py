"""The features pass's host work: what it costs the host to feed the device, a backbone aside.

    python -m bench.feeding [--images 4096] [--batch 256]    # prints one JSON object

The pass (bank.feature_batches into shards.write_shards) with a trivial backbone: every 37th
pixel of the stored uint8 images, then a 1x1 convolution to VGG16's output shape (4 x 4 x 512
at 150 px), so that reading, transfer, dispatch and writing cost what they cost for VGG16
while the compute is next to nothing. Wall time per image of the whole pass is then the host's share
(an upper bound: it includes the trivial compute, timed alone as `compute_ms_per_image`).
Target: <= 0.05 ms an image, so that a GPU doing 20,000 VGG16 passes a second is never kept
waiting by the host.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from covidxray.data.shards import Shards, write_shards
from covidxray.model.batching import batch_slices
from covidxray.model.classifier import VGGPreprocess
from covidxray.model.devices import predict_on_batch
from covidxray.model.features import feature_batches, feature_pass
from covidxray.model.machine import device, processor

SIZE, MAP = 150, 4  # VGG16 at 150 px ends in 4 x 4 x 512


class Subsample(keras.layers.Layer):
    def call(self, images):
        step = SIZE // MAP
        return images[:, ::step, ::step][:, :MAP, :MAP]


def trivial_extractor():
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = VGGPreprocess()(Subsample()(inputs))
    return keras.Model(inputs, keras.layers.Conv2D(512, 1)(x), name="trivial")


def stored_images(folder, n):
    """n random uint8 images as a sharded array, as prepare stores them."""
    rng = np.random.default_rng(0)
    batches = (rng.integers(0, 255, (len(range(n)[rows]), SIZE, SIZE, 3), dtype=np.uint8)
               for rows in batch_slices(n, 256))
    write_shards(folder, batches, (SIZE, SIZE, 3), "uint8", 1024)
    return Shards(folder, "prepare")


def timed_pass(model, images, batch, folder):
    started = time.perf_counter()
    write_shards(folder, feature_batches(model, images, batch), model.output_shape[1:],
                 "float32", 1024)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    model = feature_pass(trivial_extractor())
    with tempfile.TemporaryDirectory(prefix="feeding-") as scratch:
        images = stored_images(Path(scratch) / "images", args.images)
        timed_pass(model, images[:2 * args.batch], args.batch, Path(scratch) / "warm")
        wall = min(timed_pass(model, images, args.batch, Path(scratch) / f"pass-{i}")
                   for i in range(3))
    resident = np.zeros((args.batch, SIZE, SIZE, 3), np.uint8)
    started, batches = time.perf_counter(), -(-args.images // args.batch)
    for _ in range(batches):
        predict_on_batch(model, resident)
    compute = time.perf_counter() - started
    print(json.dumps({"device": device(), "cpu": processor(), "images": args.images,
                      "batch": args.batch,
                      "host_ms_per_image": round(1e3 * wall / args.images, 4),
                      "compute_ms_per_image": round(1e3 * compute / args.images, 4),
                      "images_per_s": round(args.images / wall)}))


if __name__ == "__main__":
    main()
