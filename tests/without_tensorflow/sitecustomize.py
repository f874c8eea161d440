"""On PYTHONPATH, makes TensorFlow unimportable in every Python process started so: the
end-to-end tests' proof that each stage runs on Keras over JAX alone, as on the GPU machine.

Not `sys.modules["tensorflow"] = None`: Keras takes a name in sys.modules for TensorFlow in use.
"""

import sys
from importlib.abc import MetaPathFinder


class NoTensorFlow(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by {__file__})",
                                      name=name)
        return None  # any other module: the usual finders


sys.meta_path.insert(0, NoTensorFlow())
