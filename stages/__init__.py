"""The pipeline's stages, one module each; `dvc dag` shows how they chain."""

import os

from covidxray.native_log import quiet_keras

quiet_keras()  # TensorFlow's native info lines left out of the stages' logs

if "DVC_STAGE" in os.environ:  # watched from the start: dvc may die while Keras loads
    from covidxray.runner import stop_with_parents

    stop_with_parents()
