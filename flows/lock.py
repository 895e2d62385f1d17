"""The retrain lock: one retrain per project, held until every process of the run has ended.

`retrain_lock(project)` flocks `<project>/.dvc/tmp/retrain.lock` and keeps it held by
  * the flow process itself;
  * every stage command DVC starts (they inherit the lock's file descriptor: a flock is held
    until every process sharing it has closed it), so a stage orphaned by a killed flow still
    holds it;
  * the run's guard (flows/guard.py), which stops the run's processes when the flow dies
    without finishing, then exits.
DVC's own repo lock is released while each stage command runs, so it cannot keep two retrains
from interleaving stages; this lock spans the whole flow.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from flows.guard import DONE, RUN_ENV, describe
from stdformer.io import DataError

LOCK_FILE = ".dvc/tmp/retrain.lock"


class RetrainBusyError(RuntimeError):
    """Another retrain (or a `dvc` command) holds the project's lock."""


def new_run() -> str:
    """Name a new retrain run in this process's environment (RUN_ENV): every process started
    from here on carries it. The CLI calls it before Prefect starts its temporary API server."""
    os.environ[RUN_ENV] = uuid.uuid4().hex
    return os.environ[RUN_ENV]


@contextlib.contextmanager
def _run_named() -> Iterator[str]:
    """The run id the CLI set, else one for the block only (in-process flow runs)."""
    if os.environ.get(RUN_ENV):
        yield os.environ[RUN_ENV]
        return
    try:
        yield new_run()
    finally:
        os.environ.pop(RUN_ENV, None)


@contextlib.contextmanager
def retrain_lock(project_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the project's retrain lock for the block (RetrainBusyError if another run has it)."""
    project = Path(project_dir).resolve()
    if not (project / ".dvc").is_dir():
        raise DataError(project_dir, "not a DVC project (no .dvc directory; run `dvc init`)")
    path = project / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainBusyError(busy_message(project, path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
        with _run_named() as run, _guarded(fd, run, project), _stage_commands_inherit(fd):
            yield
    finally:
        os.close(fd)


def busy_message(project: Path, path: Path) -> str:
    """Who holds the lock: the retrain process, or what is left of a killed one."""
    try:
        holder = path.read_text().strip()
    except OSError:
        holder = ""
    pid = holder.split("@")[0]
    holders = lock_holders(path)
    if pid.isdigit() and holders and int(pid) not in {p.pid for p in holders}:
        return (f"another retrain is running in {project}: its flow process {pid} has ended, "
                f"but processes it started still hold {LOCK_FILE} and are being stopped: "
                f"{', '.join(describe(p) for p in holders[:5])}; this run changed nothing - "
                "try again once they have ended")
    return (f"another retrain is running in {project} (process {holder or '?'} holds "
            f"{LOCK_FILE}); this run changed nothing - wait for it to finish, or stop it")


def lock_holders(path: Path) -> list:
    """Processes (psutil) that have `path` open, this one excluded."""
    import psutil

    target = os.path.realpath(path)
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if any(f.path == target for f in proc.open_files()):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@contextlib.contextmanager
def _guarded(lock_fd: int, run: str, project: Path) -> Iterator[None]:
    """Start the run's guard (flows/guard.py) for the block; tell it "done" at the end."""
    read_fd, write_fd = os.pipe()   # both non-inheritable: no stage command gets the writer
    try:
        guard = subprocess.Popen(
            [sys.executable, "-m", "flows.guard", str(read_fd), run, str(os.getpid()),
             str(project)],
            pass_fds=(read_fd, lock_fd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": _this_code_first()},
            start_new_session=True)   # Ctrl-C in the terminal does not reach it
    finally:
        os.close(read_fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.write(write_fd, DONE)
        os.close(write_fd)
        guard.wait()


def _this_code_first() -> str:
    """PYTHONPATH that makes `-m flows.guard` this checkout's guard, whatever the working
    directory or installed copy."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])


@contextlib.contextmanager
def _stage_commands_inherit(lock_fd: int) -> Iterator[None]:
    """DVC starts stage commands with close_fds=True (dvc.stage.run.prepare_kwargs, dvc
    3.67): add the lock's descriptor to the ones they keep."""
    from dvc.stage import run as dvc_run

    original = dvc_run.prepare_kwargs

    def prepare_kwargs(stage, run_env=None):
        kwargs = original(stage, run_env=run_env)
        kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), lock_fd)
        return kwargs

    dvc_run.prepare_kwargs = prepare_kwargs
    try:
        yield
    finally:
        dvc_run.prepare_kwargs = original
