"""SIGTERM during a retrain (what `timeout`, systemd, Kubernetes and schedulers send): stop the
running stage, retry nothing, and end the flow through its normal clean-up.

Prefect's own SIGTERM handler raises an exception wherever the flow happens to be, which can be
in the middle of DVC rewriting `.dvc/tmp/rwlock` (an empty file, after which every `dvc` command
fails) and which the stage retry takes for a transient failure. While `stop_on_sigterm()` is
active, SIGTERM instead
  * records the signal (the flow and its stage task check it between steps: RetrainStopped);
  * sends SIGTERM to the running stage command and its children (the descendants of this
    process that carry DVC's DVC_STAGE variable), and SIGKILL to what is left after
    STAGE_GRACE_S; a second SIGTERM kills them at once.
DVC sees its stage command fail and unwinds as after any failure (its locks released), the
flow restores params.yaml and frees the retrain lock, and the CLI exits with 128 + signal.

`timeout`, Ctrl-C and job schedulers signal the whole process group. Prefect's temporary API
server would die with it, and the flow would then retry its API calls for minutes before it
could end: `temporary_server_in_own_session()` starts that server outside the group (Prefect
stops it when the CLI exits; the run's guard after a kill -9).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import types
from collections.abc import Iterator

import psutil

STAGE_GRACE_S = 10.0      # SIGTERM -> SIGKILL for a stage command that does not stop
_DVC_STAGE_ENV = "DVC_STAGE"   # dvc.env.DVC_STAGE: set by DVC in every stage command


class RetrainStopped(RuntimeError):
    """The run was stopped by a signal; nothing is retried."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = signum, where
        super().__init__(f"retrain stopped by {signal.Signals(signum).name} {where}; "
                         "params.yaml is as it was before this run and the DVC project is "
                         "usable (run the retrain again to continue)")

    def __reduce__(self):  # picklable (Prefect may store a failed run's exception)
        return (type(self), (self.signum, self.where))


_received: list[int] = []     # signals received while a stop_on_sigterm() block is active


def stop_requested() -> int | None:
    """The signal that asked this run to stop, if one did."""
    return _received[0] if _received else None


def raise_if_stopped(where: str) -> None:
    signum = stop_requested()
    if signum is not None:
        raise RetrainStopped(signum, where)


def stage_processes() -> list[psutil.Process]:
    """Stage commands DVC started from this process, and their children."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if _DVC_STAGE_ENV in proc.environ():
                found.append(proc)
        except (psutil.Error, OSError):   # gone meanwhile
            continue
    return found


def _signal_all(processes: list[psutil.Process], kill: bool) -> None:
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.kill() if kill else proc.terminate()


def _kill_survivors(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=STAGE_GRACE_S)
    _signal_all(alive, kill=True)


def _on_sigterm(signum: int, _frame) -> None:
    """Record the signal and stop the stage; never raise (DVC may be mid-write)."""
    first = not _received
    _received.append(signum)
    processes = stage_processes()
    _signal_all(processes, kill=not first)
    if first and processes:
        threading.Thread(target=_kill_survivors, args=(processes,), name="stop-stage",
                         daemon=True).start()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Handle SIGTERM as described above for the block (main thread only: elsewhere, e.g. a
    flow run in a worker thread, the block runs without it)."""
    _received.clear()
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:   # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def temporary_server_in_own_session() -> None:
    """Have Prefect start its temporary API server (used when no PREFECT_API_URL is set) in a
    session of its own (see the module docstring)."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    # imported only here: 3 s of imports, paid anyway when the temporary server starts
    from prefect.server.api import server

    # That module's view of `subprocess`: everything as it is, but Popen in a new session.
    server.subprocess = types.SimpleNamespace(**{
        **vars(subprocess),
        "Popen": lambda *args, **kwargs: subprocess.Popen(*args, **kwargs,
                                                          start_new_session=True)})
