"""demo: the demo page on this machine, for a person to drop chest X-rays on.

    covidxray demo [--port N] [--host 127.0.0.1]

Serves, until Ctrl-C, a page where a person sees, for a chosen task, each image's class
probabilities and the Grad-CAM of its predicted class, beside the model card facts from
metrics/ that say how far to trust them. It predicts with covidxray/app/prediction.py, exactly
as `covidxray predict` does. Never shared beyond --host, no analytics; it answers only
requests addressed to --host (no other Host header, so no page elsewhere reaches it through a
name of its own), and keeps uploads and overlays in a folder of its own, readable by this user
alone and removed when it stops.
"""

import argparse
import atexit
import functools
import html
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

# before gradio is imported, which reads it then: uploads and overlays go to a private folder
# (mode 700) that goes when the process ends, not to a shared one that keeps them
UPLOADS = tempfile.mkdtemp(prefix="covidxray-demo-")
atexit.register(shutil.rmtree, UPLOADS, True)
os.environ.setdefault("GRADIO_TEMP_DIR", UPLOADS)

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.trustedhost import TrustedHostMiddleware  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402

from covidxray.app import prediction  # noqa: E402
from covidxray.config.params import load_params  # noqa: E402
from covidxray.errors import PipelineError  # noqa: E402
from covidxray.evaluation import gradcam, ood  # noqa: E402
from covidxray.evaluation.headline import interval, number, task_verdict  # noqa: E402
from covidxray.files import read_json  # noqa: E402
from covidxray.paths import DETAIL, METRICS, MODELS  # noqa: E402
from covidxray.runner import Stopped  # noqa: E402

TITLE = "COVID-19 pneumonia on chest X-rays: a research demo"
DISCLAIMER = (
    "**This is not a medical device.** It is for education and research only and must not be"
    " used to diagnose anyone. The models learned the hospital and the age of an X-ray as well"
    " as pneumonia: read the model card before believing a probability.")
DEFAULT_TASK = "adult_covid"  # the README's advice: the only task whose classes are all adults
NOT_MEASURED = "not measured for this task"
OOD_CHECKED = ("An image that does not look like a frontal chest X-ray (the `ood` stage's"
               " models/ood.npz) gets no class. It catches noise, text, photos and CT slices,"
               " but most lateral X-rays pass (metrics/detail/ood.json).")
OOD_MISSING = (f"**Inputs are not checked** for looking like a frontal chest X-ray: no"
               f" {ood.REFERENCE} (`dvc repro ood`), so noise or a photo gets a class.")
# no web fonts: the page loads nothing from outside 127.0.0.1
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
STYLE = ("#results table{border-collapse:collapse}#results td,#results th{border:1px solid #ccc;"
         "padding:3px 8px}.error{color:#b00}.unreliable{color:#b00;font-weight:bold}")


def trained_tasks(params):
    """The tasks of params.yaml that have a model in models/, in params.yaml's order."""
    return [task for task in params.tasks if (MODELS / f"{task}.keras").is_file()]


def headline(task):
    """metrics/<task>.json, or None when evaluate has not written it."""
    path = METRICS / f"{task}.json"
    return read_json(path) if path.is_file() else None


def holdout_card(task):
    """The leave-one-place-out verdict's rows when `task` is the one it judges."""
    detail, verdict = DETAIL / "holdout.json", METRICS / "holdout.json"
    if not (detail.is_file() and verdict.is_file()) or read_json(detail)["task"] != task:
        return [("COVID-19 found on a hospital it never saw", NOT_MEASURED)]
    means, judged = read_json(verdict), read_json(detail)
    targets, met = judged["targets"], judged["verdict"]["met"]

    def against(value, key, bound):
        return (f"{number(value)}, target {bound} {targets[key]}:"
                f" {'met' if met[key] else 'missed'}")

    return [("COVID-19 found on a hospital it never saw (trained without each COVID-19"
             " collection and region in turn, mean)",
             f"{against(means['covid_recall'], 'recall', 'at least')} (metrics/holdout.json)"),
            ("adults without COVID-19 called COVID-19 then",
             against(means["false_alarm"], "false_alarm", "at most"))]


def test_rows(task, h):
    """Test accuracy with its interval, COVID-19 recall and false alarms from the headline."""
    detail = DETAIL / f"{task}.json"
    counted = ""
    if detail.is_file():
        test = read_json(detail)["test"]
        counted = f", {test['correct']} of {test['n']} test images"
    covid = NOT_MEASURED if h["covid_recall"] is None else number(h["covid_recall"])
    alarm = NOT_MEASURED if h["false_alarm"] is None else number(h["false_alarm"])
    accuracy = f"{h['accuracy']:.2f} ({interval(h['ci95_low'], h['ci95_high'])})"
    return [("test accuracy (95% CI)", f"{accuracy}{counted} (metrics/{task}.json)"),
            ("COVID-19 found on the test split", covid),
            ("adults without COVID-19 (NIH, test split and external sets) called COVID-19", alarm)]


def model_card(params, task):
    """The facts about `task`'s model that matter for trust, as markdown, from params.yaml and
    metrics/."""
    spec = params.task(task)
    lines = [f"### Model card: {task}",
             f"Trained on the classes **{', '.join(spec.classes)}** from the sources"
             f" **{', '.join(spec.sources)}** (params.yaml; the sources: docs/data.md).", "",
             OOD_CHECKED if ood.REFERENCE.is_file() else OOD_MISSING, ""]
    h = headline(task)
    if h is None:
        return "\n".join([*lines, f"No metrics/{task}.json: run `dvc repro evaluate@{task}`"
                          " to measure this model."])
    rows = [*test_rows(task, h), *holdout_card(task)]
    lines += ["| measured | value |", "| --- | --- |",
              *(f"| {what} | {value} |" for what, value in rows), "",
              f"**Verdict:** {task_verdict(h)}"]
    return "\n".join(lines)


def named(path, text):
    """A message about an uploaded file with the upload folder left out of its path."""
    return text.replace(str(path), path.name)


def result_row(path, record, classes):
    """One image's row: its probabilities, or predict's message when it could not be read; an
    `unreliable` warning under it."""
    name = html.escape(path.name)
    if "error" in record:
        return (f"<tr><td>{name}</td><td class='error' colspan='{len(classes) + 1}'>"
                f"{html.escape(named(path, record['error']))}</td></tr>")
    cells = "".join(f"<td class='p'>{p:.6f}</td>" for p in record["probabilities"].values())
    called = html.escape(record["prediction"] or "none: unreliable")  # None: see `unreliable`
    row = f"<tr><td>{name}</td><td><b>{called}</b></td>{cells}</tr>"
    if record.get("unreliable"):
        row += (f"<tr><td></td><td class='unreliable' colspan='{len(classes) + 1}'>&#9888;"
                f" {html.escape(named(path, str(record['unreliable'])))}</td></tr>")
    return row


def results_table(paths, records, classes):
    head = "".join(f"<th>p({html.escape(c)})</th>" for c in classes)
    rows = "".join(result_row(p, r, classes) for p, r in zip(paths, records))
    return (f"<table id='probabilities'><tr><th>image</th><th>prediction</th>{head}</tr>"
            f"{rows}</table>")


def caption(path, record, shown_class):
    warning = " (unreliable)" if record.get("unreliable") else ""
    return f"{path.name}: Grad-CAM of {shown_class}{warning}"


def message(text):
    return f"<p class='error'>{html.escape(text)}</p>"


def shown(failed):
    """A handler whose failure reaches the page as one line, as failed(line)'s outputs, never
    as a traceback: a PipelineError's message, or any other error's type and text."""
    def wrap(handler):
        @functools.wraps(handler)
        def run(*args):
            try:
                return handler(*args)
            except PipelineError as err:
                return failed(str(err))
            except Exception as err:  # noqa: BLE001 (the page stays up and says what happened)
                line = f"unexpected error: {type(err).__name__}: {err}"
                print(f"demo: {line}", file=sys.stderr)
                return failed(line)
        return run
    return wrap


def build(params):
    """The gradio Blocks page over the tasks with a trained model."""
    tasks = trained_tasks(params)
    if not tasks:
        raise PipelineError(f"no trained model in {MODELS}/ for any task of params.yaml"
                            f" ({', '.join(params.tasks)}); train them with `dvc repro`")

    @functools.cache
    def check():  # one VGG16 for the ood check of every task's inputs
        return ood.load_xray_check()

    @functools.cache
    def classifier(task):  # each task's model loaded once, on its first use
        loaded = prediction.load(params, task, xray_check=check())
        gradcam.require_gradcam(loaded.model)
        return loaded

    @shown(lambda line: (message(line), []))
    def predict(task, files):
        if not files:
            return "", []
        model = classifier(task)
        paths = [Path(f) for f in files]
        records, predicted = prediction.classify(model, paths)
        blended = prediction.overlays(model, paths, predicted) if predicted else {}
        gallery = [(image, caption(paths[i], records[i], model.classes[predicted[i][1]]))
                   for i, image in blended.items()]
        return results_table(paths, records, model.classes), gallery

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        with gr.Row():
            with gr.Column():
                task = gr.Dropdown(tasks, value=DEFAULT_TASK if DEFAULT_TASK in tasks
                                   else tasks[0], label="task")
                files = gr.File(file_count="multiple", label="chest X-rays", elem_id="xrays")
                card = gr.Markdown(model_card(params, task.value), elem_id="model-card")
            with gr.Column():
                table = gr.HTML(elem_id="results")
                overlays = gr.Gallery(label="Grad-CAM of the predicted class", format="png",
                                      elem_id="overlays", columns=2)
        task.change(shown(message)(functools.partial(model_card, params)), task, card)
        gr.on([task.change, files.change], predict, [task, files], [table, overlays])
    return demo


def allowed_hosts(host):
    """The Host headers the page answers: its own address, and localhost beside 127.0.0.1; any
    where it listens on every address."""
    if host in ("0.0.0.0", "::"):
        return ["*"]
    return ["127.0.0.1", "localhost"] if host in ("127.0.0.1", "localhost") else [host]


class SameOrigin:
    """Refuses what another site's page sends (its Origin header names that site): a page
    elsewhere must not upload files to this one or run its models."""

    def __init__(self, app, hosts):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        origin = dict(scope.get("headers", [])).get(b"origin")
        if (scope["type"] in ("http", "websocket") and origin and "*" not in self.hosts
                and urlsplit(origin.decode("latin-1")).hostname not in self.hosts):
            refused = PlainTextResponse("cross-origin request refused", status_code=403)
            return await refused(scope, receive, send)
        await self.app(scope, receive, send)


def serve(demo, host, port):
    """Start the page on host:port, never shared, without analytics; its local URL."""
    hosts = allowed_hosts(host)
    only_here = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
                 Middleware(SameOrigin, hosts=hosts)]
    try:
        _, url, _ = demo.launch(server_name=host, server_port=port, share=False, quiet=True,
                                prevent_thread_lock=True, ssr_mode=False, mcp_server=False,
                                theme=THEME, css=STYLE, app_kwargs={"middleware": only_here})
    except OSError as err:
        # gradio's one OSError for any bind failure; its text advises its own variables
        raise PipelineError(f"cannot serve the page on {host}:{port}: the port is in use or"
                            " the address is not one of this machine's; pick another with"
                            " --port or --host") from err
    return url


def arguments(argv):
    parser = argparse.ArgumentParser(prog="covidxray demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7860, help="default 7860")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1: this machine only)")
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv)
    page = build(load_params())
    url = serve(page, args.host, args.port)
    print(f"demo: open {url} (Ctrl-C stops it)", flush=True)
    try:
        page.block_thread()  # until Ctrl-C
    except Stopped:  # SIGTERM: nothing to resume, unlike a stage
        pass
    finally:
        page.close()
