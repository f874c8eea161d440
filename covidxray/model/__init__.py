"""model: VGG16 (backbone), the features bank (features), the head (head), their training
(augment, inputs, batching, solver, training), the classifier that joins them (classifier),
and the machine they run on (machine: precision; devices: parallel devices and processes;
preflight: what the check stage can refuse before any stage runs). Imports config and data."""
