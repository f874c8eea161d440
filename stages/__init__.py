"""The pipeline's stages, one module each; `dvc dag` shows how they chain."""
