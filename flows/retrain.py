"""Prefect flow `retrain`: bring the DVC pipeline up to date, one Prefect task per DVC stage.

    python -m flows.retrain [--force] [--set preprocess.dataset_root=/data/3dpw] [--project-dir .]

The flow never re-implements a stage; it asks DVC (the Python API, as `dvc repro` does):
  1. take the project's retrain lock (`.dvc/tmp/retrain.lock`): one retrain at a time;
  2. apply parameter overrides (dotted keys into params.yaml, e.g.
     {"preprocess.dataset_root": "/data/3dpw"}); every key must already exist; the file is
     rewritten atomically with its comments kept, so the change shows in `git diff` and
     `dvc params diff` like any hand edit;
  3. `dvc status`: nothing changed (raw data, params, code) -> return "up to date" at once;
  4. every stage in DVC's own order (`dvc repro`'s plan of the stage graph), each one Prefect
     task reproducing that stage alone (`Repo.reproduce(stage, single_item=True)`), so its
     time, output and failure show in Prefect. A stage whose command exits with status 2 (bad
     input or params: `run_guarded`) or lacks a dependency is not retried; anything else
     (killed, out of memory, I/O error) is retried `retries` times;
  5. a markdown artifact `retrain-report`: the stages, metrics/eval.json against the champion
     in metrics/registry.json, and the promotion decision (when those files exist).

Stage commands run with this interpreter's directory first on PATH, so `python` in dvc.yaml
is the environment the flow runs in. DVC needs the working directory inside the repository:
the tasks chdir into `project_dir` while they work (a flow process runs one retrain at a time).
"""

from __future__ import annotations

import argparse
import codecs
import collections
import contextlib
import difflib
import io
import json
import logging
import math
import os
import re
import sys
import threading
import time
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from stdformer.config import read_params, section_config
from stdformer.io import DataError, write_text_atomic

PARAMS_FILE = "params.yaml"
EVAL_METRICS = "metrics/eval.json"
REGISTRY = "metrics/registry.json"
LOCK_FILE = ".dvc/tmp/retrain.lock"
REPORT_KEY = "retrain-report"
OUTPUT_TAIL_LINES = 200  # lines of a failed stage's output kept for its error message


@dataclass
class ScheduleConfig:
    """params.yaml section `schedule` (read by flows/, not tracked by any DVC stage)."""

    cron: str = "0 3 * * *"  # every day at 03:00; a no-op run (nothing changed) takes seconds
    timezone: str = "UTC"
    force: bool = False  # reproduce every stage even when DVC reports nothing changed
    params: dict[str, Any] = field(default_factory=dict)  # overrides applied on each run
    retries: int = 1  # per stage, for transient failures only
    retry_delay_seconds: float = 60.0

    def validate(self) -> None:
        from prefect.schedules import Cron

        if self.retries < 0:
            raise ValueError(f"retries: must be >= 0, got {self.retries}")
        if self.retry_delay_seconds < 0:
            raise ValueError(f"retry_delay_seconds: must be >= 0, got {self.retry_delay_seconds}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError) as e:
            raise ValueError(f"timezone: {self.timezone!r} is not an IANA time zone name such "
                             "as 'UTC' or 'Europe/Paris'") from e
        try:
            Cron(self.cron, timezone=self.timezone)
        except Exception as e:  # pydantic ValidationError / ValueError: bad cron string
            raise ValueError(f"cron: {self.cron!r} is not a valid cron schedule "
                             f"({_first_line(e)})") from e


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1].strip() if text else type(error).__name__


def load_schedule(params_path: str | os.PathLike) -> ScheduleConfig:
    """The `schedule` section of params.yaml (defaults when it or the file is absent)."""
    if not Path(params_path).exists():
        return ScheduleConfig()
    return section_config(read_params(params_path), "schedule", ScheduleConfig, params_path,
                          required=False)


class RetrainBusyError(RuntimeError):
    """Another retrain (or a `dvc` command) holds the project's lock."""


class StageFailed(RuntimeError):
    """A DVC stage failed; `transient` says whether retrying may help."""

    def __init__(self, stage: str, message: str, transient: bool):
        super().__init__(f"stage '{stage}' failed: {message}")
        self.stage, self.detail, self.transient = stage, message, transient

    def __reduce__(self):  # picklable (Prefect may store a failed run's exception)
        return (type(self), (self.stage, self.detail, self.transient))


# --------------------------------------------------------------------------------------------
# Parameter overrides


def _yaml_round_trip():
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip mode: comments, key order and flow-style lists survive
    yaml.preserve_quotes = True
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def apply_overrides(params_path: str | os.PathLike, overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`section.key[.subkey]`) in params.yaml; returns the ones that changed.

    Every key must exist already (a typo is a DataError with a did-you-mean hint, and nothing
    is written). A mapping value replaces the whole sub-tree. The file is rewritten atomically
    and only when a value actually changes.
    """
    params_path = Path(params_path)
    read_params(params_path)  # file present, valid YAML, a mapping
    yaml = _yaml_round_trip()
    data = yaml.load(params_path.read_text())
    changed = {}
    for dotted, value in overrides.items():
        parent, leaf = _locate(data, dotted, params_path)
        if parent[leaf] != value:
            parent[leaf] = value
            changed[dotted] = value
    if changed:
        buf = io.StringIO()
        yaml.dump(data, buf)
        write_text_atomic(params_path, buf.getvalue())
    return changed


def _locate(data: dict, dotted: str, source: Path) -> tuple[dict, str]:
    """(mapping holding the last key, last key) of an existing dotted key."""
    if not isinstance(dotted, str) or not dotted:
        raise DataError(source, f"override keys are dotted names, got {dotted!r}")
    node, keys = data, dotted.split(".")
    for depth, key in enumerate(keys):
        where = ".".join(keys[: depth + 1])
        if not isinstance(node, dict):
            raise DataError(source, "is not a mapping, cannot set a key inside it",
                            field=".".join(keys[:depth]))
        if key not in node:
            close = difflib.get_close_matches(key, [str(k) for k in node], n=1)
            hint = f" (did you mean '{'.'.join(keys[:depth] + [close[0]])}'?)" if close else ""
            raise DataError(source, f"unknown key{hint}; overrides may only change existing "
                                    "keys", field=where)
        if depth < len(keys) - 1:
            node = node[key]
    return node, keys[-1]


# --------------------------------------------------------------------------------------------
# The retrain lock and DVC plumbing


@contextlib.contextmanager
def retrain_lock(project_dir: str | os.PathLike):
    """Hold `<project>/.dvc/tmp/retrain.lock` (flock, released by the OS if the process dies).

    DVC's own repo lock is released while each stage command runs, so it cannot keep two
    retrains from interleaving stages; this lock spans the whole flow.
    """
    import zc.lockfile

    if not (Path(project_dir) / ".dvc").is_dir():
        raise DataError(project_dir, "not a DVC project (no .dvc directory; run `dvc init`)")
    path = Path(project_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("zc.lockfile").setLevel(logging.CRITICAL)  # we explain it ourselves
    try:
        lock = zc.lockfile.LockFile(str(path), content_template="{pid}@{hostname}")
    except zc.lockfile.LockError as e:
        holder = _read_holder(path)
        raise RetrainBusyError(
            f"another retrain is running in {Path(project_dir).resolve()} ({holder} holds "
            f"{LOCK_FILE}); this run changed nothing - wait for it to finish, or stop it"
        ) from e
    try:
        yield
    finally:
        lock.close()


def _read_holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f"process {text}" if text else "another process"


def _dvc_busy(project: Path, error: Exception) -> RetrainBusyError:
    return RetrainBusyError(
        f"another retrain is running in {project} (or another `dvc` command: the DVC "
        f"repository is locked); this run stopped - try again when it has finished ({error})")


@contextlib.contextmanager
def _dvc_repo(project: Path):
    """An open `dvc.repo.Repo` with the working directory inside it (DVC assumes that)."""
    from dvc.lock import LockError
    from dvc.repo import Repo

    with contextlib.chdir(project):
        try:
            with Repo(".") as repo:
                yield repo
        except LockError as e:
            raise _dvc_busy(project, e) from e


def pipeline_order(repo) -> list[str]:
    """Stage names (`addressing`) in the order `dvc repro` runs them: DVC's plan of its graph
    (dependencies first; frozen stages cut from their dependencies)."""
    from dvc.repo.reproduce import get_active_graph, plan_repro

    return [stage.addressing for stage in plan_repro(get_active_graph(repo.index.graph))]


def summarize_status(entries: list) -> list[str]:
    """One `dvc status` entry list -> short lines such as 'params.yaml: preprocess modified'."""
    lines = []
    for entry in entries:
        if isinstance(entry, dict):
            for kind, changes in entry.items():
                if isinstance(changes, dict):
                    for path, state in changes.items():
                        if isinstance(state, dict):
                            state = ", ".join(f"{k} {v}" for k, v in state.items())
                        lines.append(f"{path}: {state}")
                else:
                    lines.append(f"{kind}: {changes}")
        else:
            lines.append(str(entry))
    return lines


def _stage_env() -> dict[str, str]:
    """Extra environment for stage commands: this interpreter's environment first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1"}


# --------------------------------------------------------------------------------------------
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


def _missing_dependencies(repo, stage_name: str) -> list[str]:
    (stage,) = repo.stage.collect(stage_name)
    return [str(dep.def_path) for dep in stage.deps if not dep.exists]


def is_transient(_task, _task_run, state) -> bool:
    """Prefect retry condition: retry a stage unless its failure cannot change by retrying."""
    try:
        state.result()
    except StageFailed as e:
        return e.transient
    except RetrainBusyError:
        return False
    except BaseException:  # noqa: BLE001 - anything else (I/O, crashes) may be transient
        return True
    return False


# --------------------------------------------------------------------------------------------
# Tasks


@task(name="dvc-status", task_run_name="dvc-status", cache_policy=NO_CACHE)
def check_pipeline(project_dir: str) -> dict[str, Any]:
    """The stage order and `dvc status` of the project ({} when everything is up to date)."""
    project = Path(project_dir)
    with _dvc_repo(project) as repo:
        stages = pipeline_order(repo)
        status = repo.status()
    changed = {stage: summarize_status(entries) for stage, entries in status.items()}
    logger = get_run_logger()
    for stage, lines in changed.items():
        logger.info("stage '%s' changed: %s", stage, "; ".join(lines[:10]))
    return {"stages": stages, "changed": changed}


@task(name="apply-params", task_run_name="apply-params", cache_policy=NO_CACHE)
def apply_params(project_dir: str, overrides: dict[str, Any]) -> dict[str, Any]:
    changed = apply_overrides(Path(project_dir) / PARAMS_FILE, overrides)
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
    logger = get_run_logger()
    sink = _api_only_logger(logger)
    started = time.perf_counter()
    failure: StageFailed | None = None
    with _dvc_repo(project) as repo:
        missing = _missing_dependencies(repo, stage)
        if missing:
            raise StageFailed(stage, f"missing dependency {', '.join(missing)} (check the "
                                     "path in params.yaml / dvc.yaml)", transient=False)
        with _dvc_logs_once(), captured_output(lambda line: sink.info(line)) as tail:
            try:
                done = repo.reproduce(stage, single_item=True, force=force,
                                      run_env=_stage_env())
            except LockError as e:
                raise _dvc_busy(project, e) from e
            except (DvcException, OSError) as e:
                failure = _failure(stage, e, tail)
    seconds = time.perf_counter() - started
    if failure is not None:
        logger.error("%s", failure)
        raise failure
    ran = bool(done)
    logger.info("stage '%s' %s in %.1f s", stage, "reproduced" if ran else
                "did not change, skipped", seconds)
    return {"stage": stage, "ran": ran, "seconds": round(seconds, 2)}


# --------------------------------------------------------------------------------------------
# Report


def flatten_metrics(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested JSON as {'dotted.name': value} (booleans left out)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out |= flatten_metrics(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix] = float(data)
    return out


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_decision(registry: dict | None) -> dict[str, Any]:
    """Normalise metrics/registry.json (stages/register.py) into {'decision': 'promoted' |
    'not promoted' | None, 'detail', 'reason', 'champion', 'candidate'} (metrics mappings).

    Reads `promoted` (bool), `decision` (the alias the new version got: champion/challenger),
    `version`, `reason`, and `candidate` / `champion` objects holding a `metrics` mapping."""
    if not registry:
        return {"decision": None, "detail": None, "reason": None, "champion": {},
                "candidate": {}}
    promoted, alias = registry.get("promoted"), registry.get("decision")
    decision = ("promoted" if promoted else "not promoted") if isinstance(promoted, bool) else (
        alias if isinstance(alias, str) else None)
    version = registry.get("version")
    detail = (f"version {version} is now '{alias}'"
              if version is not None and isinstance(alias, str) else None)

    def metrics_of(entry) -> dict[str, float]:
        return flatten_metrics(entry.get("metrics", {})) if isinstance(entry, dict) else {}

    return {"decision": decision, "detail": detail, "reason": registry.get("reason"),
            "champion": metrics_of(registry.get("champion")),
            "candidate": metrics_of(registry.get("candidate"))}


def candidate_metrics(evaluation: dict | None, decision: dict[str, Any]) -> dict[str, float]:
    """What to compare with the champion: the metrics the promotion gate compared (registry
    `candidate`), else metrics/eval.json's `overall` section (or all of it)."""
    if decision["candidate"]:
        return decision["candidate"]
    if evaluation:
        return flatten_metrics(evaluation.get("overall", evaluation))
    return {}


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def render_report(result: dict[str, Any], stage_results: list[dict], project: Path) -> str:
    """The `retrain-report` markdown: stages, metrics against the champion, the decision."""
    lines = [f"# Retrain: {result['status']}", "",
             f"Project `{project}`; forced: {'yes' if result['force'] else 'no'}; overrides: "
             + (", ".join(f"`{k}={json.dumps(v)}`" for k, v in result["overrides"].items())
                or "none"), ""]
    if stage_results:
        lines += ["## Stages", "", "| stage | result | seconds |", "|---|---|---:|"]
        lines += [f"| {r['stage']} | {'reproduced' if r['ran'] else 'unchanged, skipped'} | "
                  f"{r['seconds']:.1f} |" for r in stage_results]
    else:
        lines += ["Nothing changed since the last run (`dvc status` is clean): no stage ran."]
    decision = read_decision(_read_json(project / REGISTRY))
    candidate = candidate_metrics(_read_json(project / EVAL_METRICS), decision)
    champion = decision["champion"]
    lines += ["", "## Metrics against the champion", ""]
    if candidate:
        lines += ["| metric | this model | champion | change |", "|---|---:|---:|---:|"]
        for name in sorted(candidate.keys() | champion.keys()):
            new, old = candidate.get(name), champion.get(name)
            change = None if new is None or old is None else new - old
            lines.append(f"| {name} | {_fmt(new)} | {_fmt(old)} | "
                         f"{'-' if change is None else f'{change:+.4g}'} |")
    else:
        lines += [f"No `{EVAL_METRICS}` (the pipeline has no evaluate stage yet)."]
    lines += ["", f"## Promotion decision (`{REGISTRY}`)", ""]
    if decision["decision"]:
        detail = f" ({decision['detail']})" if decision["detail"] else ""
        reason = f": {decision['reason']}" if decision["reason"] else ""
        lines += [f"**{decision['decision']}**{detail}{reason}"]
    else:
        lines += [f"No `{REGISTRY}` (the pipeline has no register stage yet)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The flow


@flow(name="retrain")
def retrain(force: bool = False, params: dict[str, Any] | None = None, project_dir: str = ".",
            retries: int | None = None, retry_delay_seconds: float | None = None
            ) -> dict[str, Any]:
    """Bring the DVC pipeline in `project_dir` up to date (see the module docstring).

    params: overrides, {dotted params.yaml key: value}. retries / retry_delay_seconds: per
    stage, for transient failures; None takes them from params.yaml's `schedule` section.
    Returns {status: 'up to date' | 'retrained', stages_run (reproduced), stages (all, in
    order), changed (stages `dvc status` flagged), overrides (that changed params.yaml),
    decision ('promoted' | 'not promoted' from metrics/registry.json, the latest registration;
    None without it), force}.
    """
    project = Path(project_dir).resolve()
    logger = get_run_logger()
    with retrain_lock(project):
        schedule = load_schedule(project / PARAMS_FILE)
        retries = schedule.retries if retries is None else retries
        delay = schedule.retry_delay_seconds if retry_delay_seconds is None else retry_delay_seconds
        overrides = apply_params(str(project), params) if params else {}
        plan = check_pipeline(str(project))
        result = {"status": "up to date", "stages_run": [], "stages": plan["stages"],
                  "changed": sorted(plan["changed"]), "overrides": overrides, "decision": None,
                  "force": force}
        stage_results = []
        if plan["changed"] or force:
            stage_task = run_stage.with_options(retries=retries, retry_delay_seconds=delay)
            for stage in plan["stages"]:
                stage_results.append(stage_task(str(project), stage, force))
            result["stages_run"] = [r["stage"] for r in stage_results if r["ran"]]
            if result["stages_run"]:
                result["status"] = "retrained"
        result["decision"] = read_decision(_read_json(project / REGISTRY))["decision"]
    create_markdown_artifact(markdown=render_report(result, stage_results, project),
                             key=REPORT_KEY, description=f"retrain of {project}")
    logger.info("retrain %s: %s", result["status"],
                ", ".join(result["stages_run"]) or "no stage ran")
    return result


def _parse_set(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params.yaml override, e.g. preprocess.dataset_root=/data/3dpw")
    parser.add_argument("--retries", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        result = retrain(force=args.force, params=_parse_set(args.set) or None,
                         project_dir=args.project_dir, retries=args.retries)
    except (StageFailed, RetrainBusyError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2 if isinstance(e, DataError) else 1) from e
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
