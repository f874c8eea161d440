"""demo: the demo page on this machine, for a person to drop chest X-rays on.

    python -m stages.demo [--port N] [--host 127.0.0.1]

Serves, until Ctrl-C, a page that predicts as `python -m stages.predict` does, with each image's
Grad-CAM and each task's model card from metrics/. Never shared beyond --host, no analytics.
"""

import argparse
import sys

from covidxray import demo
from covidxray.cli import Stopped, cli
from covidxray.params import load_params


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m stages.demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7860, help="default 7860")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1: this machine only)")
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv)
    page = demo.page(load_params())
    url = demo.serve(page, args.host, args.port)
    print(f"demo: open {url} (Ctrl-C stops it)", flush=True)
    try:
        page.block_thread()  # until Ctrl-C
    except Stopped:  # SIGTERM: nothing to resume, unlike a stage
        pass
    finally:
        page.close()


if __name__ == "__main__":
    sys.exit(cli(main)())
