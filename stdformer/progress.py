"""Progress of long work: a tqdm bar on a terminal, periodic log lines with rates otherwise.

Under `dvc repro`, a Prefect flow or a CI log, stderr is not a terminal and a tqdm bar turns into
one endless line of carriage returns. There the same calls print a plain line every
`interval_s` seconds and one when the work ends:

    synthesize: 240/1212 frames (20%), 31.2 frames/s, eta 31 s
    synthesize: done, 1212 frames in 38.9 s (31.2 frames/s)

    bar = progress(total=1212, desc="synthesize", unit="frame")
    for ...: bar.update(n)
    bar.close()
    for batch in progress(loader, total=len(plan), desc="evaluate", unit="batch"): ...
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str,
             unit: str = "it", initial: int = 0, disable: bool = False,
             stream: TextIO | None = None, interval_s: float = LOG_INTERVAL_S,
             clock: Callable[[], float] = time.monotonic):
    """A tqdm bar when `stream` (default stderr) is a terminal, else a `LogProgress` with the
    same calls (update, set_postfix, set_postfix_str, write, close, iteration)."""
    stream = sys.stderr if stream is None else stream
    if disable or _isatty(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream,
                    disable=disable, dynamic_ncols=True, mininterval=0.5)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                       stream=stream, interval_s=interval_s, clock=clock)


def mlflow_bars_on_terminal_only() -> None:
    """MLflow draws its own artifact transfer bars: off when stderr is not a terminal (a log),
    where each would be one long line of carriage returns."""
    if not _isatty(sys.stderr):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # closed or not a real file
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LogProgress:
    """Rate-limited progress lines: at most one per `interval_s`, plus a final one."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None, desc: str,
                 unit: str, stream: TextIO, initial: int = 0,
                 interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.stream, self.interval_s, self.clock = initial, stream, interval_s, clock
        self._initial, self._start = initial, clock()
        self._last_line, self._postfix, self._closed = self._start, "", False

    # tqdm's calls ---------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self._print(self._status(now))

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def write(self, message: str) -> None:
        self._print(message)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        done = self.n - self._initial
        if done <= 0:
            return
        seconds = self.clock() - self._start
        self._print(f"{self.desc}: done, {self.n} {self._units} in {seconds:.1f} s "
                    f"({self._rate(done, seconds)})")

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # lines ----------------------------------------------------------------------------------
    @property
    def _units(self) -> str:
        return self.unit + ("es" if self.unit.endswith(("s", "sh", "ch", "x")) else "s")

    def _rate(self, done: int, seconds: float) -> str:
        return f"{done / seconds:.1f} {self._units}/s" if seconds > 0 else f"? {self._units}/s"

    def _status(self, now: float) -> str:
        done, seconds = self.n - self._initial, now - self._start
        parts = [f"{self.n}/{self.total} {self._units} ({100 * self.n / self.total:.0f}%)"
                 if self.total else f"{self.n} {self._units}", self._rate(done, seconds)]
        if self.total and done > 0 and seconds > 0:
            parts.append(f"eta {_duration((self.total - self.n) * seconds / done)}")
        if self._postfix:
            parts.append(self._postfix)
        return f"{self.desc}: " + ", ".join(parts)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
