"""check: every value of params.yaml, before any other stage runs.

DVC deletes a stage's outputs just before it runs it, so a stage that found a bad value itself
would already have lost them (data/features for a misspelt `bank`, metrics never cached). Every
stage depends on this one's output, data/params-checked.txt, so `dvc repro` stops here first.
The file says only that the check passed, the same bytes whatever the values: a change of
params reruns this stage and then just the stages that read those params. Beyond the values,
it checks what the file system can tell now: the backbone's weights file and the paths of the
training sources and external sets (covidxray/model/preflight.py).
"""

from covidxray.config.params import load_params
from covidxray.files import replacing
from covidxray.model.preflight import preflight
from covidxray.paths import PARAMS_CHECKED, PARAMS_FILE
from covidxray.runner import cli


def main():
    params = load_params()
    preflight(params)  # the weights file and the sources' paths, before DVC deletes anything
    with replacing(PARAMS_CHECKED) as partial:
        partial.write_text(f"{PARAMS_FILE} passed the checks of covidxray/config/params.py\n")
    print(f"check: {PARAMS_FILE} is valid ({len(params.tasks)} tasks,"
          f" {len(params.external)} external sets)")


if __name__ == "__main__":
    cli(main)()
