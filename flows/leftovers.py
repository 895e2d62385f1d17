"""What a retrain that did not finish can leave behind, and how it is put right: by the dead
run's guard (flows/guard.py) once the run's processes are stopped, else by the next retrain as
it starts (under the retrain lock, so the run that left it is gone).

* The params journal, `.dvc/tmp/retrain-params.json`: params.yaml as it was before the run's
  `--set` overrides, the overrides and the digest of the file they produced; written
  (atomically) before params.yaml is rewritten, removed when the run ends. Found later,
  params.yaml is put back from it with a one-line warning, unless the file has been edited
  since the overrides were applied (then it is left alone, and the warning names them).
* DVC's `.dvc/tmp/rwlock`: DVC rewrites it in place, so a process killed mid-write leaves it
  empty or cut short, and every `dvc` command then fails ("JSON structure is corrupted").
  Found so while no DVC process of the project is alive, it is removed (DVC recreates it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from stdformer.io import cut_for_message, write_text_atomic

JOURNAL_FILE = ".dvc/tmp/retrain-params.json"
JOURNAL_FORMAT = "stdformer-retrain-params/1"
RWLOCK_FILE = ".dvc/tmp/rwlock"

Warn = Callable[[str], None]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe_overrides(overrides: dict[str, Any]) -> str:
    """'train.steps=12, preprocess.workers=2' (values cut for messages)."""
    return ", ".join(f"{key}={cut_for_message(json.dumps(value, default=str))}"
                     for key, value in overrides.items())


def write_params_journal(project: Path, params_path: Path, original: bytes, result: str,
                         overrides: dict[str, Any]) -> None:
    """Record params.yaml before `overrides` (and the digest of `result`, the file they make):
    call before params.yaml is rewritten."""
    write_text_atomic(project / JOURNAL_FILE, json.dumps({
        "format": JOURNAL_FORMAT, "params_file": params_path.name,
        "original": original.decode("utf-8"), "result_sha256": _sha256(result.encode("utf-8")),
        "overrides": overrides, "pid": os.getpid()}, default=str))


@contextlib.contextmanager
def overrides_undone_on_failure(project: Path, params_path: Path, warn: Warn) -> Iterator[None]:
    """Put params.yaml back as it was when the block fails (a failed run's overrides do not
    linger for the next run), and remove the run's journal when the block ends either way.
    (Outputs DVC removed before a failed stage ran are in its cache where the stage caches
    them: `dvc checkout` restores them.)"""
    before = params_path.read_bytes() if params_path.is_file() else None
    try:
        yield
    except BaseException:
        if before is not None and params_path.read_bytes() != before:
            write_text_atomic(params_path, before.decode())
            warn(f"the run failed: {params_path.name} restored as it was before this run's "
                 "overrides")
        (project / JOURNAL_FILE).unlink(missing_ok=True)   # not when the restore failed
        raise
    (project / JOURNAL_FILE).unlink(missing_ok=True)


def restore_from_journal(project: Path, warn: Warn) -> bool:
    """Undo the overrides of a run that did not finish (see the module docstring); True when
    params.yaml was restored."""
    journal = project / JOURNAL_FILE
    if not journal.is_file():
        return False
    try:
        record = json.loads(journal.read_text())
        if record.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"format {record.get('format')!r}")
        params_path = project / Path(record["params_file"]).name
        original = record["original"].encode("utf-8")
        overrides = describe_overrides(record["overrides"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        warn(f"{journal}: unreadable ({cut_for_message(str(e))}); removed - check that "
             "params.yaml holds no override of an earlier run")
        journal.unlink(missing_ok=True)
        return False
    current = params_path.read_bytes() if params_path.is_file() else None
    restored = False
    if current == original:
        pass                                   # killed before its overrides were written
    elif current is None or _sha256(current) == record["result_sha256"]:
        write_text_atomic(params_path, original.decode("utf-8"))
        warn(f"{params_path.name}: restored as it was before the overrides of a retrain "
             f"that did not finish (process {record.get('pid', '?')}): {overrides}")
        restored = True
    else:
        warn(f"{params_path.name}: a retrain that did not finish had set {overrides}, and the "
             "file has been edited since: left as it is - check those keys")
    journal.unlink(missing_ok=True)
    return restored


def dvc_processes(project: Path) -> list[psutil.Process]:
    """Live processes (this one excluded) working on the DVC project: a `dvc` command run in
    it, or a stage command DVC started for it (DVC_ROOT in its environment)."""
    root = str(project.resolve())
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get("DVC_ROOT") == root:
                found.append(proc)
                continue
            cmd = proc.cmdline()
            runs_dvc = any(Path(part).name == "dvc" for part in cmd[:2]) or \
                (len(cmd) > 2 and cmd[1] == "-m" and cmd[2] == "dvc")
            if runs_dvc and (proc.cwd() + os.sep).startswith(root + os.sep):
                found.append(proc)
        except (psutil.Error, OSError):       # gone, a zombie, or another user's
            continue
    return found


def rwlock_problem(project: Path) -> str | None:
    """What is wrong with DVC's rwlock file ('empty', 'not JSON ...'), None when it is fine or
    absent."""
    path = project / RWLOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        return f"unreadable ({e})"
    if not text.strip():
        return "empty"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not JSON ({e})"
    return None if isinstance(data, dict) else "not a JSON object"


def repair_rwlock(project: Path, warn: Warn) -> bool:
    """Remove a broken `.dvc/tmp/rwlock` when no DVC process of the project is alive (a live
    one may be rewriting it right now); True when removed."""
    problem = rwlock_problem(project)
    if problem is None or dvc_processes(project):
        return False
    (project / RWLOCK_FILE).unlink(missing_ok=True)
    warn(f"{project / RWLOCK_FILE}: {problem}, left by a DVC process that was killed while "
         "writing it; removed (DVC recreates it)")
    return True


def repair_leftovers(project: Path, warn: Warn) -> None:
    """Everything above, in order."""
    restore_from_journal(project, warn)
    repair_rwlock(project, warn)
