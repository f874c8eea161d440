"""TensorFlow's native log: TF 2.21's C++ writes absl info lines (oneDNN, the CUDA probe) twice
while Keras imports it, before it reads TF_CPP_MIN_LOG_LEVEL, so the variable alone cannot
silence them ahead of a stage's or a command's own output. The entry points (stages/, app/) call
quiet_keras: the first `import keras` then passes on only what the level keeps."""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# absl's lines: a severity letter (Info, Warning, Error, Fatal) and the date; or its banner
# saying that such lines come, taken as Info
NATIVE_LINE = re.compile(r"^(?:([IWEF])\d{4} |WARNING: All log messages before absl::)")


def native_log_kept(text, level):
    """The lines of `text` (what native code wrote to stderr) that TF_CPP_MIN_LOG_LEVEL `level`
    keeps: absl's below the level go, every other line stays."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not (found := NATIVE_LINE.match(line))
                   or "IWEF".index(found[1] or "I") >= level)


@contextlib.contextmanager
def filtered():
    """Within the block, what is written to stderr (fd 2, native code's too) is caught; then
    what TF_CPP_MIN_LOG_LEVEL keeps (unset: every line) is written on."""
    setting = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    level = int(setting) if setting.isdigit() else 0
    try:
        caught = tempfile.TemporaryFile()
    except OSError:  # no writable temporary folder: the lines pass as they are
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            sys.stderr.write(native_log_kept(caught.read().decode(errors="replace"), level))


class QuietLoader(importlib.abc.Loader):
    """Keras's own loader, run inside filtered(); anything else asked of it goes to that one."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with filtered():
            self.loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class QuietKeras(importlib.abc.MetaPathFinder):
    """Finds Keras where the other finders do, with QuietLoader; once, then it steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = QuietLoader(spec.loader)
        return spec


def quiet_keras():
    """For the entry points (stages/, app/): TF_CPP_MIN_LOG_LEVEL 3 unless set (run on CPU-only
    machines too, TF's C++ would report its failed CUDA probe as an error; Python exceptions
    still say what went wrong), and the process's first `import keras`, wherever it is, leaves
    out the native lines below it. Keras is not imported here: a stage that needs none loads
    none."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" not in sys.modules and not any(isinstance(f, QuietKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietKeras())
