"""data: the images and their tables. Reading each source layout (sources, tables, folders),
decoding images (images), the train/val/test split (splitting), the decoded shards (shards),
the external sets as stored (external) and the digests that tie outputs to their manifest
(provenance). Imports config and the top-level modules; no Keras."""
