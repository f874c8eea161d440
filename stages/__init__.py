"""The pipeline's stages, one module each; `dvc dag` shows how they chain."""

import os

# Stages run on CPU-only machines too: TensorFlow's C++ log would report its failed CUDA probe
# there as an error. Python exceptions still say what went wrong. Set the variable to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if "DVC_STAGE" in os.environ:  # watched from the start: dvc may die while Keras loads
    from covidxray.runner import stop_with_parents

    stop_with_parents()
