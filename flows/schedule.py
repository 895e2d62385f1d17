"""The params.yaml section `schedule` (read by flows/, not tracked by any DVC stage)."""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stdformer.config import read_params, section_config

PARAMS_FILE = "params.yaml"


@dataclass
class ScheduleConfig:
    """params.yaml section `schedule`: when `flows.deploy` runs the retrain, and how."""

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
