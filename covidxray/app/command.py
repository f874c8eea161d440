"""The `covidxray` command (pyproject.toml's [project.scripts]; `python -m covidxray` is the
same): one subcommand for each thing a person runs besides the pipeline.

    covidxray predict --task adult_covid X-RAY...   # classify chest X-rays
    covidxray demo                                  # the demo page on http://127.0.0.1:7860/
    covidxray verify [--rev REV]                    # a rebuild's metrics against a commit's

`covidxray SUBCOMMAND --help` says more. The pipeline itself runs with `dvc repro`.
"""

import importlib
import sys

from covidxray.runner import cli

SUBCOMMANDS = {"predict": "covidxray.app.predict", "demo": "covidxray.app.demo",
               "verify": "covidxray.app.verify"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"covidxray: no subcommand {argv[0]!r}; choose one of"
              f" {', '.join(SUBCOMMANDS)} (covidxray --help)", file=sys.stderr)
        return 2
    # imported here, not above: `covidxray predict --help` answers without loading gradio
    subcommand = importlib.import_module(SUBCOMMANDS[argv[0]])
    return cli(subcommand.main)(argv[1:])
