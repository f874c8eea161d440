"""Decoding images (covidxray/data/images.py): any mode to 8-bit RGB, the crop, CLAHE, and the same
bytes on several processes."""

import numpy as np
import pytest
from PIL import Image

from covidxray.config.schema import Preprocess
from covidxray.data.images import load_images, open_rgb
from covidxray.errors import PipelineError
from tests.conftest import write_image


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
def test_every_image_mode_decodes_to_8_bit_rgb(tmp_path, mode):
    image = open_rgb(write_image(tmp_path / "x.png", mode=mode))
    assert image.mode == "RGB" and image.size == (40, 32)


def test_16_bit_images_are_stretched_onto_the_8_bit_range(tmp_path):
    pixels = np.asarray(open_rgb(write_image(tmp_path / "x.png", mode="I;16")))
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize("content", [b"", b"GIF89a-but-not-really", b"\xff\xd8\xff\xe0 cut"])
def test_unreadable_images_raise_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.jpeg"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=r"broken\.jpeg: not a readable image"):
        open_rgb(path)


def test_load_images_squashes_to_a_uint8_batch(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i, size=(60 + i, 30)) for i in range(3)]
    batch = load_images(paths, 16)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.uint8


def test_the_crop_cuts_each_side_before_resizing(tmp_path):
    pixels = np.full((100, 100), 255, np.uint8)
    pixels[10:90, 10:90] = 60  # a white frame, 10% of each side, round a grey field
    path = tmp_path / "framed.png"
    Image.fromarray(pixels).save(path)
    assert load_images([path], 20).max() == 255
    assert np.all(load_images([path], 20, Preprocess(crop=0.1)) == 60)


def test_clahe_spreads_a_faint_image_over_the_grey_levels_and_stays_grey(tmp_path):
    ramp = np.tile(np.linspace(100, 140, 64).astype(np.uint8), (64, 1))
    path = tmp_path / "faint.png"
    Image.fromarray(np.stack([ramp, ramp, ramp + 5], axis=2)).save(path)  # a faint tint too
    clahe = Preprocess(clahe=0.02)
    plain, equalised = load_images([path], 64), load_images([path], 64, clahe)
    assert np.ptp(equalised) > 2 * np.ptp(plain[..., 0])
    assert np.array_equal(equalised[..., 0], equalised[..., 2])
    assert np.array_equal(equalised, load_images([path], 64, clahe))  # deterministic


def test_decoding_on_several_processes_gives_the_same_bytes_as_one(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i, size=(50 + i, 40)) for i in range(9)]
    preprocess = Preprocess(crop=0.05, clahe=0.01)
    serial = load_images(paths, 24, preprocess)
    assert np.array_equal(load_images(paths, 24, preprocess, workers=3), serial)


def test_an_unreadable_image_names_itself_from_a_worker_process(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    paths[2].write_bytes(b"not a png")
    with pytest.raises(PipelineError, match=r"2\.png: not a readable image"):
        load_images(paths, 24, workers=2)
