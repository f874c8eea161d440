"""How a main() becomes a command, a DVC stage or `covidxray ...`: a PipelineError ends it with
one line instead of a traceback, Ctrl-C and SIGTERM stop it cleanly, and under DVC it stops when
dvc dies."""

import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

from covidxray.errors import PipelineError


class Stopped(BaseException):
    """SIGTERM, or the dvc process that started the stage died. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way up swallows it."""


def cli(main):
    """Run a stage's main(): a PipelineError ends it with its message instead of a traceback,
    Ctrl-C and SIGTERM with one line that says how to resume. Under DVC it also stops when dvc
    dies, so an orphan never rewrites outputs that a later run restored."""

    @functools.wraps(main)
    def run(*args):
        previous = signal.signal(signal.SIGTERM, _stop)
        if "DVC_STAGE" in os.environ:
            stop_with_parents()
        try:
            return main(*args)
        except PipelineError as err:
            sys.exit(f"error: {err}")
        except (KeyboardInterrupt, Stopped) as err:
            print(f"interrupted: {stage_name(main, args)} stopped ({str(err) or 'Ctrl-C'})"
                  + (" and left every output it had not finished as it was; run `dvc repro` to"
                     " resume (stages that finished are not run again)" if is_stage(main) else ""),
                  file=sys.stderr)
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return run


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def module_name(main):
    """The import name of main's module (`covidxray.app.predict`, also when it runs as
    `python -m` and is called __main__), or None for a script."""
    spec = sys.modules[main.__module__].__spec__
    return spec.name if spec else None


def of_the_app(main):
    return (module_name(main) or "").startswith("covidxray.app.")


def is_stage(main):
    """Whether main writes pipeline outputs, which `dvc repro` resumes: all but the app's."""
    return not of_the_app(main) or "DVC_STAGE" in os.environ


def stage_name(main, args):
    """train@three under DVC, `covidxray predict` for a command of the app, else the command
    that ran it."""
    name = module_name(main)
    if of_the_app(main):
        command = f"covidxray {name.rsplit('.', 1)[1]}"
    else:
        command = " ".join([f"python -m {name}" if name else f"python {sys.argv[0]}",
                            *map(str, args)])
    return os.environ.get("DVC_STAGE") or command


def parent_of(pid):
    """The parent process id, or None once the process is gone (Linux /proc; elsewhere only
    this process's own parent is known)."""
    if pid == os.getpid():
        return os.getppid()
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def runs_dvc(pid):
    """Whether the process is `dvc ...` or `python -m dvc ...`."""
    return any(Path(os.fsdecode(arg)).name == "dvc" for arg in command_line(pid)[:3])


def is_shell_command(pid):
    """Whether the process is `<shell> [options] -c <command>`, as DVC starts a stage."""
    return b"-c" in command_line(pid)[1:-1]


def stop_with_parents(seconds=1.0):
    """SIGTERM this process once the dvc process that runs it dies. DVC starts a stage through
    `$SHELL -c`, and the shell may stay in between; a dead process's children are re-parented
    at once, even while it is an unreaped zombie, so a changed parent id is the sign, and a
    parent that is already init means dvc died before the watch began. dvc's own parent is not
    watched: `nohup dvc repro &` outlives its terminal, and so do its stages. Once a process."""
    global _watching
    if _watching:
        return
    _watching = True
    chain = [os.getpid(), os.getppid()]
    if chain[-1] == 1 and not runs_dvc(1):  # (dvc itself may be init, in a container)
        os.kill(os.getpid(), signal.SIGTERM)
    if is_shell_command(chain[-1]) and parent_of(chain[-1]) not in (None, 0, 1):
        chain.append(parent_of(chain[-1]))
    links = list(zip(chain, chain[1:]))

    def watch():
        while all(parent_of(child) == parent for child, parent in links):
            time.sleep(seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parents", daemon=True).start()


_watching = False


def task_argument(stage):
    """The one command-line argument of a per-task stage."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m stages.{stage} TASK")
    return sys.argv[1]
