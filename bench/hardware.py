"""What this machine can do for the frozen backbone: matmul rate, VGG16's FLOPs, forward rate.

    python -m bench.hardware [threads]  # prints one JSON object

The forward-pass limit is matmul rate / FLOPs per image: no training that runs every
image through VGG16 can beat it. Measured per Keras dtype policy (with TensorFlow, on its
default thread pools or on `threads`), beside what `backbone.precision: auto` measures
(machine.measured_precision); `faster_limit_images_per_s` is the better policy's limit, the
yardstick of the features stage's rate.
"""

import json
import os
import sys

import keras
import numpy as np

from covidxray.config.params import load_params
from covidxray.model.backbone import build_backbone
from covidxray.model.machine import device, measured_precision, processor, rate

SECONDS = 8  # per measurement
BATCH = 32   # images per forward pass


def conv_flops(model):
    """Multiply-adds of every Conv2D layer, times two: the FLOPs of one forward pass."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            flops += 2 * h * w * kh * kw * c_in * c_out
    return flops


def matmul_gflops(dtype, n=2048):
    a = keras.random.normal((n, n), dtype=dtype, seed=0)
    return rate(lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, a)), SECONDS,
                2 * n**3) / 1e9


def measure(policy, size, batch):
    backbone = build_backbone("none", size, policy)
    images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    dtype = "bfloat16" if "bfloat16" in policy else "float32"
    gflops = matmul_gflops(dtype)
    flops = conv_flops(backbone)
    return {"policy": policy, "matmul_gflops": round(gflops, 1),
            "vgg16_gflops_per_image": round(flops / 1e9, 2),
            "forward_limit_images_per_s": round(gflops * 1e9 / flops, 1),
            "forward_images_per_s": round(rate(lambda: backbone.predict_on_batch(images), SECONDS,
                                                      batch), 1)}


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if threads and keras.backend.backend() == "tensorflow":  # before TF starts its pools
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    results = [measure(policy, load_params().image_size, BATCH)
               for policy in ("float32", "mixed_bfloat16")]
    print(json.dumps({"device": device(), "cpu": processor(), "threads": threads or os.cpu_count(),
                      "results": results, "auto": measured_precision(),
                      "faster_limit_images_per_s": max(r["forward_limit_images_per_s"]
                                                       for r in results)}))


if __name__ == "__main__":
    main()
