"""model: VGG16 (backbone), the features bank (features), the head (head), their training
(augment, inputs, batching, solver, training), the classifier that joins them (classifier),
and the machine they run on (machine: precision; devices: parallel devices and processes;
preflight: what the check stage can refuse before any stage runs). Imports config and data."""


def __getattr__(name):
    """covidxray.model.VGGPreprocess, the module saved classifiers name for that layer (without
    importing Keras for every other use of this wing)."""
    if name == "VGGPreprocess":
        from covidxray.model.classifier import VGGPreprocess

        return VGGPreprocess
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
