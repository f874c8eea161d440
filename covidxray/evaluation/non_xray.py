"""Probe sets for stages/ood.py: inputs that are not frontal chest X-rays, the same every run
(seeded) and found offline. Other views and modalities of the COVID-19 source (lateral X-rays,
CT slices), scikit-image's bundled photos, rendered text pages and uniform noise. Each is
decoded from a file exactly as predict decodes its inputs (covidxray/data/images.py)."""

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from covidxray.data.images import decoded, load_images
from covidxray.data.sources import COVID_COLUMNS
from covidxray.data.tables import listed_file, read_rows
from covidxray.errors import PipelineError
from covidxray.paths import RAW

COVID_SOURCE = RAW / "covid-chestxray-dataset"
OTHER_VIEWS = {"lateral": ("X-ray", {"L"}), "ct": ("CT", None)}  # modality, views (None: any)
# skimage.data's images that ship with scikit-image (the others are downloaded on first use)
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "cat", "rocket", "horse", "clock", "coins",
          "moon", "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry",
          "retina", "colorwheel", "cell", "checkerboard", "microaneurysms",
          "shepp_logan_phantom", "logo")
DRAWN = 20  # text pages, and noise images of each kind
NOISE_SIDE = 300  # pixels: the grey noise image
WORDS = ("the patient was admitted with fever and cough chest radiograph shows no acute"
         " findings consolidation effusion heart size normal lungs clear report signed").split()


def other_views(root, skipped):
    """{lateral, ct}: the paths of metadata.csv's rows of each modality and view, any finding;
    a listed file that is missing goes to `skipped`."""
    metadata = Path(root) / "metadata.csv"
    found = {name: [] for name in OTHER_VIEWS}
    for record in read_rows(metadata, COVID_COLUMNS, skipped):
        for name, (modality, views) in OTHER_VIEWS.items():
            if record["modality"] == modality and (views is None or record["view"] in views):
                path = Path(root) / "images" / record["filename"]
                if listed_file(path, metadata, record["line"], skipped):
                    found[name].append(path)
    return found


def photos():
    """PHOTOS as 8-bit RGB PIL images."""
    from skimage import data, img_as_ubyte  # here: predict's and the GPU check's paths skip it

    def rgb(pixels):
        pixels = img_as_ubyte(pixels / pixels.max() if pixels.dtype.kind == "f" else pixels)
        return Image.fromarray(pixels).convert("RGB")

    return [rgb(getattr(data, name)()) for name in PHOTOS]


def pages(rng, count):
    """Text pages: words in lines, dark on light and (every other page) light on dark, as an
    X-ray is, at a drawn font size; then skimage's scanned `text` and `page`."""
    from skimage import data

    drawn = []
    for i in range(count):
        size = int(rng.integers(10, 28))
        ink, paper = (255, 0) if i % 2 else (0, 255)
        page = Image.new("L", (300, 400), paper)
        draw, font = ImageDraw.Draw(page), ImageFont.load_default(size=size)
        for y in range(8, 400 - size, int(size * 1.4)):
            draw.text((8, y), " ".join(rng.choice(WORDS, 8)), fill=ink, font=font)
        drawn.append(page)
    return drawn + [Image.fromarray(data.text()), Image.fromarray(data.page())]


def noise(rng, count, channels):
    """Uniform noise, NOISE_SIDE pixels a side: grey (1 channel) or colour (3)."""
    shape = (NOISE_SIDE, NOISE_SIDE, channels) if channels > 1 else (NOISE_SIDE, NOISE_SIDE)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(count)]


def drawn_sets(seed):
    """{photos, text, grey_noise, colour_noise}: PIL images, each set from its own seeded
    stream, so that changing one leaves the others as they were."""
    def rng(k):
        return np.random.default_rng([seed, k])

    return {"photos": photos(), "text": pages(rng(1), DRAWN),
            "grey_noise": noise(rng(2), DRAWN, 1), "colour_noise": noise(rng(3), DRAWN, 3)}


def as_files(images, size, preprocess):
    """PIL images decoded as predict decodes a file: saved as PNG (lossless), then read back."""
    with tempfile.TemporaryDirectory(prefix="ood-probes-") as folder:
        paths = [Path(folder) / f"{i:03d}.png" for i in range(len(images))]
        for image, path in zip(images, paths):
            image.save(path)
        return load_images(paths, size, preprocess)


def decodable(paths, size, preprocess, skipped):
    """The decoded images of the paths that decode; each that does not goes to `skipped`."""
    images = []
    for path in paths:
        try:
            images.append(decoded(path, size, preprocess))
        except PipelineError as err:
            skipped.append({"path": str(path), "reason": str(err)})
    return np.stack(images) if images else np.empty((0, size, size, 3), np.uint8)


def non_xray_sets(seed, size, preprocess, root=COVID_SOURCE):
    """{set: N x size x size x 3 uint8} of every probe set, and the files left out, and why."""
    skipped = []
    sets = {name: decodable(paths, size, preprocess, skipped)
            for name, paths in other_views(root, skipped).items()}
    sets.update({name: as_files(images, size, preprocess)
                 for name, images in drawn_sets(seed).items()})
    return sets, skipped
