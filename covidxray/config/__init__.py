"""config: params.yaml read once, every value checked on reading (reader.py's Section), and
returned as frozen dataclasses (schema.py: training sections; layouts.py: data sources). Imports
only the top-level modules; every other wing reads params through load_params."""
