"""The guard of one retrain run: a small process that outlives a killed flow just long enough
to stop what the flow started.

    python -m flows.guard PIPE_FD RUN_ID FLOW_PID PROJECT   (started by flows.lock.retrain_lock)

It blocks on a pipe whose only writer is the flow. A flow that finishes writes "done" and the
guard exits. A flow that dies (kill -9, out of memory) closes the pipe without it: the guard
then finds every process of the run (each carries RUN_ID in its environment: stage commands,
their children, Prefect's temporary API server), sends SIGTERM, waits GRACE_S, sends SIGKILL
to what is left, puts right what the run left half done (flows/leftovers.py: params.yaml's
overrides undone, a broken DVC rwlock removed), and exits. It inherited the retrain lock's file
descriptor, so the lock is free only once the run's processes are gone and that is done.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil

from flows.leftovers import repair_leftovers

RUN_ENV = "STDFORMER_RETRAIN_RUN"   # environment variable naming the run (flows.lock sets it)
DONE = b"done"
GRACE_S = 20.0                      # seconds between SIGTERM and SIGKILL
ROUNDS = 3                          # rescans: a dying stage may start a process meanwhile


def run_processes(run_id: str) -> list[psutil.Process]:
    """Live processes (other than this one) whose environment carries RUN_ENV=run_id."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(RUN_ENV) == run_id:
                found.append(proc)
        except (psutil.Error, OSError):  # gone, a zombie, or another user's
            continue
    return found


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} ({' '.join(proc.cmdline())[:80]})"
    except (psutil.Error, OSError):
        return str(proc.pid)


def stop(processes: list[psutil.Process], grace_s: float) -> None:
    for proc in processes:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def main(argv: list[str]) -> int:
    pipe_fd, run_id, flow_pid, project = int(argv[1]), argv[2], argv[3], Path(argv[4])
    message = b""
    while chunk := os.read(pipe_fd, 64):
        message += chunk
    if message == DONE:
        return 0
    for _ in range(ROUNDS):
        processes = run_processes(run_id)
        if not processes:
            break
        print(f"retrain: the flow process {flow_pid} ended before the run finished; stopping "
              f"its processes: {', '.join(describe(p) for p in processes)}", file=sys.stderr,
              flush=True)
        stop(processes, GRACE_S)
    repair_leftovers(project, lambda line: print(f"retrain: {line}", file=sys.stderr,
                                                 flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
