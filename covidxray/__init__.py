"""The library under the pipeline's stages: data sources, splitting, the model, the bank, training
and scoring. Each stages/<name>.py is a thin main() over these modules."""
