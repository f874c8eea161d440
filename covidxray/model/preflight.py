"""What the check stage can tell from params, the environment and the file system before any
stage runs: the backbone's weights file, every folder or table a training source or external set
names, and KERAS_DISTRIBUTION_NUM_PROCESSES.

DVC deletes a stage's outputs just before it runs it, so a missing file that `features` or
`merge` found itself would already have cost their outputs (docs/troubleshooting.md#params).
"""

import difflib
from pathlib import Path

from covidxray.data.tables import require_columns
from covidxray.errors import PipelineError
from covidxray.model.backbone import weights_file
from covidxray.model.devices import process_count

NAMED_WEIGHTS = ("imagenet", "hed", "none")


def check_weights(weights):
    """backbone.weights names imagenet, hed or none, or a file that is there."""
    path = weights_file(weights)
    if path is None or path.is_file():
        return
    near = difflib.get_close_matches(weights, NAMED_WEIGHTS, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise PipelineError(f"params.yaml: backbone.weights must be imagenet, hed, none or a weights"
                        f" file, got {weights!r}: no such file{hint}")


def check_paths(params):
    """Each path of merge.sources and external (and a table's images folder) exists, and a
    table names the columns its set's `columns` give."""
    named = {**{f"merge.sources.{name}": spec for name, spec in params.merge.sources.items()},
             **{f"external.{name}": spec for name, spec in params.external.items()}}
    for key, spec in named.items():
        for field, path in (("path", spec.path), ("images", spec.filter.images)):
            if path is not None and not Path(path).exists():
                raise PipelineError(f"params.yaml: {key}.{field}: {path} does not exist")
        if spec.layout == "table":
            try:
                require_columns(spec.path, list(spec.filter.columns.values()))
            except PipelineError as err:
                raise PipelineError(f"params.yaml: {key}.columns: {err}") from err


def preflight(params):
    check_weights(params.backbone.weights)
    check_paths(params)
    process_count()  # a count below 1 or not a number
