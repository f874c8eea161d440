"""predict: classify new chest X-rays with a trained model, one JSON line per image on stdout.

    covidxray predict --task TASK [--model FILE] [--csv FILE] [--gradcam DIR]
                       [--batch-size N] [--recursive] PATH...

A PATH is an image file or a folder of them (with --recursive, the folders inside it too); an
image or a folder that cannot be read gets an error record, and stderr gets a summary line.
An image that does not look like a frontal chest X-ray like the training ones (models/ood.npz,
from `dvc repro ood`) gets `"prediction": null` and `"unreliable"`, saying why; without that
file every image gets a class, and stderr one warning that none was checked.
Images are decoded, cropped, resized and equalised exactly as the model's training images were
(the `preprocess` in models/TASK.json).
A file name that is not UTF-8 keeps its bytes: \\udcNN escapes in JSON (os.fsencode gives
them back), the bytes themselves in the CSV. Exit status: 0 when every image was predicted
(flagged unreliable or not), 1 when some image or folder could not be read (or none were
found), 2 on bad usage.
"""

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from covidxray.config.params import load_params
from covidxray.errors import PipelineError
from covidxray.files import replacing, write_table
from covidxray.model.batching import batch_slices
from covidxray.runner import cli

# Keras (and TensorFlow) load in load(), after the arguments are parsed: `--help` and a usage
# error answer in a fraction of a second, not after seconds of importing them.

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}
QUIET_UP_TO = 8  # images; more get a progress bar
MAX_BATCH = 1024  # images decoded at once: a 150-px batch of 1024 is about 70 MB of pixels
EXAMPLE = """example, on an NIH adult without a finding from the shared datasets:
  covidxray predict --task adult_covid \\
      ../shared/datasets/nih-chestxray14-sample/images/00001299_000.png"""


def batch_size(text):
    value = int(text)  # a ValueError becomes argparse's own usage error
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_BATCH}, got {value}")
    return value


def arguments(argv):
    parser = argparse.ArgumentParser(
        prog="covidxray predict", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    parser.add_argument("--task", required=True,
                        help="a task of params.yaml: adult_covid for an adult X-ray")
    parser.add_argument("--model", type=Path, metavar="FILE",
                        help="the classifier (default models/TASK.keras)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write a results table")
    parser.add_argument("--gradcam", type=Path, metavar="DIR",
                        help="write each image's Grad-CAM overlay of its predicted class here")
    parser.add_argument("--batch-size", type=batch_size, default=32, metavar="N",
                        help=f"images decoded and run together, 1 to {MAX_BATCH} (default 32)")
    parser.add_argument("--recursive", action="store_true",
                        help="search the folders inside each folder PATH too")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="an image file or a folder of them")
    return parser.parse_args(argv)


def load(args):
    """The task's classifier (prediction.load), and the --gradcam folder made."""
    from covidxray.app import prediction
    from covidxray.evaluation import gradcam, ood

    classifier = prediction.load(load_params(), args.task, args.model)
    if classifier.xray_check is None:
        print(f"warning: {ood.REFERENCE} is missing, so no input is checked for looking like a"
              " frontal chest X-ray: noise or a photo gets a class like an X-ray; build it with"
              " `dvc repro ood`", file=sys.stderr)
    if args.gradcam:
        gradcam.require_gradcam(classifier.model)
        try:
            args.gradcam.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PipelineError(f"--gradcam {args.gradcam}: cannot create the folder ({err})") \
                from err
    return classifier


def find_images(paths, recursive):
    """Each PATH as given, whatever its suffix, or a folder's image files in sorted order; and
    an error record for each folder, a PATH or one inside it, that could not be read."""
    found, unread = [], []
    for path in paths:
        if is_folder(path):
            found += folder_images(path, unread, recursive)
        else:
            found.append(path)  # a missing one gets an error record like an unreadable one
    return found, unread


def is_folder(path):
    """Whether PATH is a folder. One that cannot be looked at (in a folder that cannot be
    entered) is not: it is then tried as an image, whose error record says why it failed."""
    try:
        return path.is_dir()
    except OSError:
        return False


def folder_images(folder, unread, recursive):
    """The image files in a folder, and with `recursive` in the folders inside it (not links
    to folders), sorted; an error record in `unread` for each folder that cannot be read."""
    def record(err):
        unread.append({"path": err.filename, "error": f"{err.filename}: cannot read this folder"
                       f" ({err.strerror.lower()}), so its images were not predicted; make it"
                       " readable to this user and predict them again"})

    # files, not only regular ones: a dangling or looping link gets an error record like any
    # unreadable file
    found = []
    for parent, subfolders, files in os.walk(folder, onerror=record):
        found += [Path(parent, name) for name in files
                  if Path(name).suffix.lower() in IMAGE_SUFFIXES]
        if not recursive:
            subfolders.clear()
    return sorted(found)


def write_overlays(classifier, folder, paths, predicted, first_number):
    """<n>_<stem>.png per predicted image: the Grad-CAM of its class over the image.

    n is the image's line number in the output, so equal stems never clash.
    """
    from PIL import Image

    from covidxray.app import prediction

    for i, blended in prediction.overlays(classifier, paths, predicted).items():
        with replacing(folder / f"{first_number + i:04d}_{paths[i].stem}.png") as partial:
            Image.fromarray(blended).save(partial)


def write_csv(path, records, classes):
    import pandas as pd

    table = pd.DataFrame([{"path": r["path"], "prediction": r.get("prediction"),
                           **{f"p_{c}": r.get("probabilities", {}).get(c) for c in classes},
                           "unreliable": r.get("unreliable"), "error": r.get("error")}
                          for r in records])
    try:
        write_table(table, path)
    except OSError as err:
        raise PipelineError(f"--csv {path}: cannot write ({err})") from err


def emit(records):
    """Each record as a JSON line on stdout; False when its reader has closed it (`| head -1`).
    Then stdout goes to /dev/null, so no later write, Python's last flush included, fails."""
    try:
        for record in records:
            print(json.dumps(record), flush=True)
        return True
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False


def run(args, classifier, paths, first_line, open_, records):
    """Predict batch by batch, printing each batch's records as soon as it is done and adding
    them to `records` (so that an interrupted run keeps those); the first one is output line
    `first_line`. The next batch is decoded while this one runs. Once stdout is closed the rest
    are predicted only for --csv; without it they are left. Returns whether stdout was open to
    the end."""
    from tqdm import tqdm

    from covidxray.app import prediction

    batches = list(batch_slices(len(paths), args.batch_size))
    with (tqdm(total=len(paths), unit="image", disable=len(paths) <= QUIET_UP_TO,
               file=sys.stderr) as progress,
          ThreadPoolExecutor(1, thread_name_prefix="decode-ahead") as reader):
        ahead = [reader.submit(prediction.decode, classifier, paths[rows]) for rows in batches[:1]]
        for i, rows in enumerate(batches):
            batch, decoded = paths[rows], ahead.pop().result()
            if i + 1 < len(batches):
                ahead.append(reader.submit(prediction.decode, classifier, paths[batches[i + 1]]))
            batch_records, predicted = prediction.classify(classifier, batch, decoded)
            if args.gradcam and predicted:
                write_overlays(classifier, args.gradcam, batch, predicted, first_line + rows.start)
            records += batch_records  # first: an interrupted print still counts it
            open_ = emit(batch_records) and open_
            progress.update(len(batch))
            if not open_ and not args.csv:
                break
    return open_


def usable_outputs(args):
    """Refuse, before any model is loaded, outputs that could not take the predictions."""
    if sys.stdout is None and not args.csv:  # started with stdout closed (`>&-`)
        raise PipelineError("stdout is closed, so every prediction would be lost; give --csv"
                            " FILE, or run it with stdout open")
    if args.csv and args.csv.is_dir():
        raise PipelineError(f"--csv {args.csv}: a folder; name a file for the table")


def counts(records, checked):
    """stderr's summary: of the images tried, those given a class, flagged (no class) and not
    read."""
    failed = sum("error" in r for r in records)
    flagged = sum("unreliable" in r for r in records)
    return (f"{len(records)} image(s) tried, {len(records) - failed - flagged} predicted, {failed}"
            f" failed" + (f", {flagged} flagged unreliable (no class)" if checked else ""))


def main(argv=None):
    args = arguments(argv)
    try:
        usable_outputs(args)
        classifier = load(args)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    paths, unread = find_images(args.paths, args.recursive)
    if not paths and not unread:
        raise PipelineError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in"
                            f" {', '.join(map(str, args.paths))}")
    records = []
    try:
        open_ = run(args, classifier, paths, len(unread) + 1, emit(unread), records)
    except KeyboardInterrupt:  # keep what was predicted: the CSV of those, then stop
        if args.csv:
            write_csv(args.csv, unread + records, classifier.classes)
        print(f"predict: interrupted: {counts(records, classifier.xray_check)} of"
              f" {len(paths)}" + (f"; --csv {args.csv} holds those" if args.csv else ""),
              file=sys.stderr)
        raise
    if args.csv:
        write_csv(args.csv, unread + records, classifier.classes)
    if not open_:
        print("predict: stdout was closed by its reader; "
              + (f"every image was still predicted for --csv {args.csv}" if args.csv else
                 f"stopped after {len(records)} of {len(paths)} image(s)"), file=sys.stderr)
    failed = sum("error" in r for r in records)
    print(f"predict: {counts(records, classifier.xray_check)}"
          + (f", {len(unread)} folder(s) unreadable" if unread else ""), file=sys.stderr)
    if failed:
        print(f"error: {failed} of {len(records)} images could not be read", file=sys.stderr)
    if unread:
        print(f"error: {len(unread)} folder(s) could not be read", file=sys.stderr)
    return 1 if failed or unread else 0


if __name__ == "__main__":
    sys.exit(cli(main)())
