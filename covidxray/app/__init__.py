"""app: what a person runs, under the `covidxray` command (command): predict (prediction,
predict), the demo page (demo) and a rebuild's check (verify, tolerances). Imports every other
wing; nothing imports it."""

from covidxray.native_log import quiet_keras

quiet_keras()  # TensorFlow's native info lines left out of the commands' output
