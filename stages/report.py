"""report: one self-contained HTML page of a run, viewable offline in any browser.

A summary first (per task: test accuracy with its interval, COVID-19 recall, the share of adults
without COVID-19 called COVID-19, and a verdict), then the leave-one-place-out verdict, the
data, each task's tables and plots (curves, confusion matrices, ROC, the test gallery and its
Grad-CAM heatmaps), the shortcut checks and how predict's check of inputs that are not
frontal chest X-rays does on probe sets (stages/ood.py), the plots embedded as data URIs so
the one file is the whole report (covidxray/evaluation/report.py builds the sections).

Writes report/index.html.
"""

from pathlib import Path

from covidxray.config.params import load_params
from covidxray.evaluation.report import (STYLE, confound_section, controls_section, data_section,
                                         holdout_section, ood_section, summary_section,
                                         task_section)
from covidxray.files import replacing
from covidxray.runner import cli

REPORT = Path("report/index.html")
# No date in the page: the same run gives the same bytes (DVC then sees it unchanged)
WHEN = ("<p class='note'>No date is written here, so that the same run gives the same page:"
        " <code>git log -1 --format=%cd -- dvc.lock</code> dates the commit that recorded this"
        " run, and each task's section names the device and precision it trained on.</p>")


def main():
    params = load_params()
    sets = list(params.external)
    tasks = {name: list(task.classes) for name, task in params.tasks.items()}
    sections = [summary_section(tasks), holdout_section(), data_section(),
                *(task_section(t, c, sets) for t, c in tasks.items()), confound_section(),
                controls_section(), ood_section()]
    names = ["summary", "holdout", "data", *tasks, "confound", "controls", "ood"]
    contents = " | ".join(f"<a href='#{name}'>{name}</a>" for name in names)
    with replacing(REPORT) as partial:
        partial.write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
                           f"<title>COVID-19 chest X-ray pipeline: run report</title>"
                           f"<style>{STYLE}</style></head><body>\n<h1>Run report</h1>\n"
                           f"{WHEN}\n<p>{contents}</p>\n" + "\n".join(sections)
                           + "\n</body></html>\n")
    print(f"report: {REPORT} ({REPORT.stat().st_size // 1024} KiB), open it in a browser")


if __name__ == "__main__":
    cli(main)()
