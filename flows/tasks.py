"""The Prefect tasks of the retrain flow: `dvc status`, the params overrides, and one task per
DVC stage whose output goes to that task's logs and whose failure says whether a retry may help.

A stage whose command exits with status 2 (bad input or params: `run_guarded`) or lacks a
dependency is not retried, nor one stopped by SIGTERM (flows/stop.py); anything else (killed,
out of memory, I/O error) is retried.
Stage commands run with this interpreter's directory first on PATH, so `python` in dvc.yaml
is the environment the flow runs in. DVC needs the working directory inside the repository:
the tasks chdir into the project while they work (a flow process runs one retrain at a time).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

from flows.leftovers import write_params_journal
from flows.lock import RetrainBusyError
from flows.overrides import apply_overrides
from flows.schedule import PARAMS_FILE
from flows.status import dvc_busy, dvc_repo, missing_dependencies, pipeline_order, summarize_status
from flows.stop import RetrainStopped, raise_if_stopped

OUTPUT_TAIL_LINES = 200  # lines of a failed stage's output kept for its error message


class StageFailed(RuntimeError):
    """A DVC stage failed; `transient` says whether retrying may help."""

    def __init__(self, stage: str, message: str, transient: bool):
        super().__init__(f"stage '{stage}' failed: {message}")
        self.stage, self.detail, self.transient = stage, message, transient

    def __reduce__(self):  # picklable (Prefect may store a failed run's exception)
        return (type(self), (self.stage, self.detail, self.transient))


def _stage_env() -> dict[str, str]:
    """Extra environment for stage commands: this interpreter's environment first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1"}


# Stage output: stage commands inherit fds 1 and 2, so capture them there.


def _api_only_logger(run_logger) -> logging.LoggerAdapter:
    """A logger that sends to the Prefect API but not the console (the console already shows
    the command's own output), bound to the current run."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("stdformer.flows.stage_output")
    if not logger.handlers:
        logger.addHandler(APILogHandler())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logging.LoggerAdapter(logger, dict(getattr(run_logger, "extra", {}) or {}))


@contextlib.contextmanager
def captured_output(line_sink=None, tail_lines: int = OUTPUT_TAIL_LINES):
    """Redirect fds 1 and 2 (and so every child process's output) into a pipe while the block
    runs; the output still reaches the original stderr as it comes, each complete line goes to
    `line_sink(line)` and the last `tail_lines` lines are kept in the yielded deque."""
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    read_fd, write_fd = os.pipe()

    def emit(raw: str) -> None:
        line = raw.rsplit("\r", 1)[-1].rstrip()  # a progress bar's last state
        if line:
            tail.append(line)
            if line_sink is not None:
                with contextlib.suppress(Exception):
                    line_sink(line)

    def pump() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # chunks split characters
        pending = ""
        while chunk := os.read(read_fd, 65536):
            with contextlib.suppress(OSError):
                _write_all(saved_err, chunk)
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                emit(line)
            pending = pending.rsplit("\r", 1)[-1]  # a progress bar redraws without newlines
        emit(pending + decoder.decode(b"", final=True))

    thread = threading.Thread(target=pump, name="stage-output", daemon=True)
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread.start()
    try:
        yield tail
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        # EOF once no process holds the pipe (a stray daemon child could: do not wait forever).
        thread.join(timeout=10)
        if not thread.is_alive():
            os.close(read_fd)
            os.close(saved_err)
        os.close(saved_out)


@contextlib.contextmanager
def _dvc_logs_once():
    """DVC prints through its own handlers; keep its records from also reaching the root
    logger (Prefect's console handler), which would print every DVC line twice."""
    dvc_logger = logging.getLogger("dvc")
    before = dvc_logger.propagate
    dvc_logger.propagate = False
    try:
        yield
    finally:
        dvc_logger.propagate = before


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]

_ERROR_LINE = re.compile(r"^(error|ERROR):\s*(.+)$")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:?.*$")


def stage_error_message(lines) -> str | None:
    """The stage's own error from its output: the last `error: ...` line (`run_guarded`), else
    the last line of a Python traceback; None when there is neither."""
    lines = list(lines)
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match and not match.group(2).startswith("failed to reproduce"):
            return match.group(2)
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line.strip()):
            return line.strip()
    return None


def _failure(stage: str, error: Exception, output_tail) -> StageFailed:
    """A StageFailed that carries the stage's own message and whether a retry may help."""
    chain, cause = [], error
    while cause is not None and len(chain) < 5:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    exit_status = None
    for exc in chain:
        match = re.search(r"exited with (-?\d+)", str(exc))
        if match:
            exit_status = int(match.group(1))
    own = stage_error_message(output_tail)
    if own:
        detail = own if exit_status is None else f"{own} (command exited with status {exit_status})"
    else:  # e.g. killed (negative status): DVC's own messages say what happened
        detail = "; ".join(dict.fromkeys(str(e) for e in chain if str(e))) or repr(error)
    # 2 = bad input or params (run_guarded, argparse): the same run would fail again.
    return StageFailed(stage, detail, transient=exit_status != 2)

def is_transient(_task, _task_run, state) -> bool:
    """Prefect retry condition: retry a stage unless its failure cannot change by retrying."""
    try:
        state.result()
    except StageFailed as e:
        return e.transient
    except (RetrainBusyError, RetrainStopped, KeyboardInterrupt, SystemExit, TerminationSignal):
        return False                # asked to stop, or another run's: retrying cannot help
    except BaseException:  # noqa: BLE001 - anything else (I/O, crashes) may be transient
        return True
    return False


@task(name="dvc-status", task_run_name="dvc-status", cache_policy=NO_CACHE)
def check_pipeline(project_dir: str) -> dict[str, Any]:
    """The stage order and `dvc status` of the project ({} when everything is up to date)."""
    project = Path(project_dir)
    with dvc_repo(project) as repo:
        stages = pipeline_order(repo)
        status = repo.status()
    changed = {stage: summarize_status(entries) for stage, entries in status.items()}
    logger = get_run_logger()
    for stage, lines in changed.items():
        logger.info("stage '%s' changed: %s", stage, "; ".join(lines[:10]))
    return {"stages": stages, "changed": changed}


@task(name="apply-params", task_run_name="apply-params", cache_policy=NO_CACHE)
def apply_params(project_dir: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply the overrides to params.yaml, journaled first (flows/leftovers.py) so that a run
    killed from here on has them undone."""
    project = Path(project_dir)
    params_path = project / PARAMS_FILE
    original = params_path.read_bytes()
    changed = apply_overrides(params_path, overrides, before_write=lambda text, changed:
                              write_params_journal(project, params_path, original, text, changed))
    get_run_logger().info("params.yaml overrides: %s",
                          json.dumps(changed) if changed else "already set, nothing changed")
    return changed


@task(name="dvc-stage", task_run_name="stage-{stage}", cache_policy=NO_CACHE,
      retry_condition_fn=is_transient)
def run_stage(project_dir: str, stage: str, force: bool = False) -> dict[str, Any]:
    """`dvc repro --single-item [--force] <stage>`; the command's output goes to this task's
    Prefect logs, and a failure raises StageFailed with the stage's own error message."""
    from dvc.exceptions import DvcException
    from dvc.lock import LockError

    project = Path(project_dir)
    raise_if_stopped(f"before stage '{stage}'")     # e.g. during a retry's delay
    logger = get_run_logger()
    sink = _api_only_logger(logger)
    started = time.perf_counter()
    failure: StageFailed | None = None
    with dvc_repo(project) as repo:
        missing = missing_dependencies(repo, stage)
        if missing:
            raise StageFailed(stage, f"missing dependency {', '.join(missing)} (check the "
                                     "path in params.yaml / dvc.yaml)", transient=False)
        with _dvc_logs_once(), captured_output(lambda line: sink.info(line)) as tail:
            try:
                done = repo.reproduce(stage, single_item=True, force=force,
                                      run_env=_stage_env())
            except LockError as e:
                raise dvc_busy(project, e) from e
            except (DvcException, OSError) as e:
                failure = _failure(stage, e, tail)
    seconds = time.perf_counter() - started
    if failure is not None:
        raise_if_stopped(f"during stage '{stage}' (its command was stopped)")
        logger.error("%s", failure)
        raise failure
    ran = bool(done)
    logger.info("stage '%s' %s in %.1f s", stage, "reproduced" if ran else
                "did not change, skipped", seconds)
    return {"stage": stage, "ran": ran, "seconds": round(seconds, 2)}
