"""Decoding images: any format to 8-bit RGB, cropped, resized and (optionally) equalised, on a
pool of processes, the same bytes whatever the number of workers."""

import functools
import os
import signal
import stat
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import numpy as np
from PIL import Image

from covidxray.config.schema import Preprocess
from covidxray.errors import PipelineError

MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's decompression-bomb guard: 89,478,485 (9459 px square)
NONE = Preprocess()  # no crop, no CLAHE


def open_rgb(path):
    """Decode any image to 8-bit RGB; raises PipelineError naming the file if it can't.

    Images over PIL's decompression-bomb limit (MAX_PIXELS) are refused before decoding, and a
    path that is no regular file (a FIFO, a device) before it is opened: that could wait forever.
    """
    if not regular(path):
        raise PipelineError(f"{path}: not a regular file (a FIFO, device or socket); only files"
                            " are read as images")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decodes fully, so a truncated file fails here and not later
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PipelineError(f"{path}: too large, over {MAX_PIXELS:,} pixels ({err})") from err
    except Exception as err:  # PIL's format plugins raise many types on malformed files
        raise PipelineError(f"{path}: not a readable image ({type(err).__name__}: {err})") \
            from err


def regular(path):
    """Whether `path` is a regular file, or cannot be looked at (missing, unreadable: the
    decoder then says why)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _to_rgb(img):
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit X-rays store 10 to 16 significant bits, and the header does not say how many:
        # stretch the range actually used onto 0-255.
        pixels = np.asarray(img, dtype=np.float64)
        low, high = pixels.min(), pixels.max()
        scaled = (pixels - low) * (255.0 / max(high - low, 1e-9))
        img = Image.fromarray(scaled.round().astype(np.uint8))
    return img.convert("RGB")


def cropped(img, crop):
    """The PIL image less `crop` of its width and height on each side."""
    if not crop:
        return img
    w, h = img.size
    dx, dy = round(w * crop), round(h * crop)
    return img.crop((dx, dy, w - dx, h - dy))


def decoded(path, size, preprocess=NONE):
    """One image as a uint8 array of size x size x 3, squashed like the tutorial's loader, after
    cutting `preprocess.crop` off each side; with `preprocess.clahe`, the grey levels are then
    equalised by CLAHE at that clip limit (skimage's, on the resized image, so its tiles see the
    same anatomy whatever the source's resolution)."""
    img = cropped(open_rgb(path), preprocess.crop).resize((size, size), Image.Resampling.BILINEAR)
    if preprocess.clahe:
        from skimage import exposure  # here: the GPU check's machine has no scikit-image

        grey = exposure.equalize_adapthist(np.asarray(img.convert("L")),
                                           clip_limit=preprocess.clahe)
        img = Image.fromarray(np.round(grey * 255).astype(np.uint8)).convert("RGB")
    return np.asarray(img)


def cores():
    return len(os.sched_getaffinity(0))


def _quiet_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report, once


def decode_all(paths, size, preprocess=NONE, workers=1):
    """Yield the `decoded` image of each path, in order, decoding on `workers` processes in
    chunks; the images are the same byte for byte whatever the number of workers."""
    paths = list(paths)
    decode = functools.partial(decoded, size=size, preprocess=preprocess)
    if workers < 2 or len(paths) < 2:
        yield from map(decode, paths)
        return
    # spawn: a forked child would inherit the watchdog thread's state and any held locks
    pool = ProcessPoolExecutor(min(workers, len(paths)), mp_context=get_context("spawn"),
                               initializer=_quiet_worker)
    done = 0
    try:
        chunk = max(1, min(32, len(paths) // (4 * workers)))
        for pixels in pool.map(decode, paths, chunksize=chunk):
            yield pixels
            done += 1
    except BrokenProcessPool as err:  # a worker was killed (say for memory): no file to name
        raise PipelineError(f"a process decoding images died ({err}) at or after"
                            f" {paths[done]}") from err
    finally:
        pool.shutdown(cancel_futures=True)


def load_images(paths, size, preprocess=NONE, workers=1):
    """The `decoded` images of paths stacked, N x size x size x 3 (see decode_all)."""
    paths = list(paths)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, pixels in enumerate(decode_all(paths, size, preprocess, workers)):
        out[i] = pixels
    return out
