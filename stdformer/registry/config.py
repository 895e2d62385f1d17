"""The params section `register`: which registered model, and the promotion gate's rules."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# Evaluation metrics the gate knows; all are errors (lower is better): mm, accel mm/frame^2.
GATE_METRICS = ("mpjpe", "pa_mpjpe", "mpvpe", "accel")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RegisterConfig:
    """params.yaml section `register`.

    Gate (on the `primary_dataset` rows of eval.json): a new version becomes `champion` only if
    its `primary_metric` is lower than the
    champion's by more than `min_improvement` (so a tie never promotes) and no metric in
    `tolerances` is worse than the champion's by more than its tolerance (same units as the
    metric). Otherwise it becomes `challenger`. The first version becomes champion.
    """

    model_name: str = "stdformer"         # registered model name
    experiment: str = "stdformer"         # MLflow experiment of the registration runs
    primary_dataset: str = "3dpw"         # evaluate.datasets entry the gate compares on
    primary_metric: str = "pa_mpjpe"
    min_improvement: float = 0.0          # mm; the primary metric must drop by more than this
    tolerances: dict[str, float] = field(  # allowed regression of the other metrics (mm)
        default_factory=lambda: {"mpjpe": 1.0, "mpvpe": 1.0, "accel": 1.0})
    require_lineage: bool = True          # refuse to register without dvc.lock hashes

    def validate(self) -> None:
        for key, name in (("model_name", self.model_name), ("experiment", self.experiment)):
            if not _NAME.match(name):
                raise ValueError(f"{key} {name!r} must be letters, digits, '_', '.', '-'")
        if not _NAME.match(self.primary_dataset):
            raise ValueError(f"primary_dataset {self.primary_dataset!r} must be letters, digits, "
                             "'_', '.', '-'")
        if self.primary_metric not in GATE_METRICS:
            raise ValueError(f"primary_metric {self.primary_metric!r} must be one of "
                             f"{', '.join(GATE_METRICS)}")
        if not (math.isfinite(self.min_improvement) and self.min_improvement >= 0):
            raise ValueError(f"min_improvement must be >= 0, got {self.min_improvement}")
        for metric, tol in self.tolerances.items():
            if metric not in GATE_METRICS:
                raise ValueError(f"tolerances: unknown metric {metric!r} (known: "
                                 f"{', '.join(GATE_METRICS)})")
            if metric == self.primary_metric:
                raise ValueError(f"tolerances: {metric!r} is the primary metric (it must improve; "
                                 "use min_improvement)")
            if not (math.isfinite(tol) and tol >= 0):
                raise ValueError(f"tolerances.{metric} must be a number >= 0, got {tol}")

    @property
    def gated_metrics(self) -> tuple[str, ...]:
        return (self.primary_metric, *sorted(self.tolerances))
