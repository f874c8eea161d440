"""app: what a person runs, under the `covidxray` command (command): predict (prediction,
predict), the demo page (demo) and a rebuild's check (verify, tolerances). Imports every other
wing; nothing imports it."""

import os

# Commands run on CPU-only machines too: TensorFlow's C++ log would report its failed CUDA probe
# there as an error. Python exceptions still say what went wrong. Set the variable to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
