"""app: what a person runs, under the `covidxray` command (command): predict (prediction,
predict), the demo page (demo) and a rebuild's check (verify, tolerances). Imports every other
wing; nothing imports it."""

import os
import re
import sys
import tempfile

# Commands run on CPU-only machines too: TensorFlow's C++ log would report its failed CUDA probe
# there as an error. Python exceptions still say what went wrong. Set the variable to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# absl's lines: a severity letter (Info, Warning, Error, Fatal) and the date; or its banner
# saying that such lines come, taken as Info
NATIVE_LINE = re.compile(r"^(?:([IWEF])\d{4} |WARNING: All log messages before absl::)")


def native_log_kept(text, level):
    """The lines of `text` (what native code wrote to stderr) that TF_CPP_MIN_LOG_LEVEL `level`
    keeps: absl's below the level go, every other line stays."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not (found := NATIVE_LINE.match(line))
                   or "IWEF".index(found[1] or "I") >= level)


def import_keras():
    """Import Keras (and its backend) with stderr caught: TF 2.21's C++ writes info lines before
    it reads TF_CPP_MIN_LOG_LEVEL, twice, ahead of a command's own output. What the level keeps
    (and anything else written there) is passed on."""
    if "keras" in sys.modules:
        return
    setting = os.environ["TF_CPP_MIN_LOG_LEVEL"]
    level = int(setting) if setting.isdigit() else 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            sys.stderr.write(native_log_kept(caught.read().decode(errors="replace"), level))
