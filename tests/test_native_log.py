"""TensorFlow's native log lines: left out below TF_CPP_MIN_LOG_LEVEL, for stages and commands,
without importing Keras where nothing needs it."""

import os
import subprocess
import sys

import pytest

from covidxray import native_log
from covidxray.native_log import filtered, native_log_kept
from tests.conftest import ROOT

NATIVE_LOG = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    """I0000 00:00:1796492289.745832   16540 port.cc:153] oneDNN custom operations are on.
W0000 00:00:1796492289.745900   16540 cuda_executor.cc:1] a warning
E0000 00:00:1796492291.728222   16540 cuda_platform.cc:52] failed call to cuInit
some_module.py:3: UserWarning: written by Python while Keras was imported
""")


@pytest.mark.parametrize("level, kept", [(3, [4]), (2, [3, 4]), (1, [2, 3, 4]),
                                         (0, [0, 1, 2, 3, 4])])
def test_tensorflows_native_lines_below_its_log_level_go_and_every_other_line_stays(level,
                                                                                     kept):
    lines = NATIVE_LOG.splitlines(keepends=True)
    assert native_log_kept(NATIVE_LOG, level) == "".join(lines[i] for i in kept)


@pytest.mark.parametrize("temporary", [True, False])
def test_what_native_code_writes_in_the_block_is_kept_at_its_level(capfd, monkeypatch,
                                                                   temporary):
    """Caught through fd 2 and written on after the block; with no temporary file to catch it
    in, every line passes as it is."""
    def read_only():
        raise OSError("Read-only file system")

    if not temporary:
        monkeypatch.setattr(native_log.tempfile, "TemporaryFile", read_only)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with filtered():
        os.write(2, b"I0000 00:00:1.0  1 port.cc:153] oneDNN\nplain\n")
    assert capfd.readouterr().err == ("plain\n" if temporary else
                                      "I0000 00:00:1.0  1 port.cc:153] oneDNN\nplain\n")


def python(code, **env):
    """`code` run as a fresh process, from a shell without TF_CPP_MIN_LOG_LEVEL unless given."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env={**environ, "PYTHONPATH": str(ROOT), **env}, check=True)


@pytest.mark.slow  # imports Keras in four processes
def test_a_stage_imports_keras_without_its_native_lines_and_only_when_it_needs_it():
    plain = python("import keras").stderr
    assert "I0000" in plain  # what TensorFlow writes, when nothing leaves it out
    free = python("import sys, stages.merge; print('keras' in sys.modules)")
    assert free.stdout == "False\n" and free.stderr == ""
    quiet = python("import stages.merge, keras, sys; print('x', file=sys.stderr);"
                   " print(keras.ops.convert_to_numpy(keras.ops.ones(2)).sum())")
    assert quiet.stdout == "2.0\n" and quiet.stderr == "x\n"
    shown = python("import stages.merge, keras", TF_CPP_MIN_LOG_LEVEL="0").stderr
    assert shown.count("I0000") == plain.count("I0000") > 0
