"""The promotion gate, a pure function of two metric dicts and the `register` config.

Rules (all metrics are errors, lower is better):
* no champion yet -> promote (the first version becomes champion) if its primary metric is
  finite;
* the primary metric must be finite and lower than the champion's by more than
  `min_improvement`: a tie (equal values) never promotes, the champion stays;
* every metric in `tolerances` may be worse than the champion's by at most its tolerance
  (a champion without that metric, e.g. an older evaluation, is not compared on it);
* the champion's own model file registered again (same weights hash) is a tie, whatever the
  metrics say (an older version's metrics may be stored rounded).
Values are compared exactly as evaluated (versions store them unrounded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from stdformer.registry.config import RegisterConfig


@dataclass(frozen=True)
class Comparison:
    """One metric, candidate vs champion (None where a side has no value)."""

    candidate: float | None
    champion: float | None
    delta: float | None                    # candidate - champion (negative = better)
    allowed: float | None                  # primary: -min_improvement bound; others: tolerance
    ok: bool


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    primary_metric: str
    compared: dict[str, Comparison] = field(default_factory=dict)

    @property
    def alias(self) -> str:
        return "champion" if self.promote else "challenger"

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "alias": self.alias, "reason": self.reason,
                "primary_metric": self.primary_metric,
                "compared": {k: asdict(v) for k, v in sorted(self.compared.items())}}


def _value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    value = None if metrics is None else metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _delta(value: float) -> str:
    """A signed difference that never prints a nonzero change as 0.00."""
    return f"{value:+.2f}" if value == 0 or abs(value) >= 0.005 else f"{value:+.2g}"


def decide(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None,
           cfg: RegisterConfig, same_model: bool = False) -> Decision:
    """Should `candidate` (metric -> value) replace `champion` (None: there is none)?
    same_model: the candidate's model file is the champion's (equal weights hashes)."""
    primary = cfg.primary_metric
    if champion is None:
        compared = {m: Comparison(_value(candidate, m), None, None, None, True)
                    for m in cfg.gated_metrics}
        if _value(candidate, primary) is None:     # a failed evaluation never serves
            return Decision(False, f"candidate has no finite {primary}; no champion yet",
                            primary, compared)
        return Decision(True, "no champion yet: the first version becomes champion", primary,
                        compared)

    compared, regressions = {}, []
    for metric, tolerance in sorted(cfg.tolerances.items()):
        c, h = _value(candidate, metric), _value(champion, metric)
        if h is None:               # nothing to compare against
            compared[metric] = Comparison(c, None, None, tolerance, True)
        elif c is None:             # the candidate cannot show it did not regress
            compared[metric] = Comparison(None, h, None, tolerance, False)
            regressions.append(f"{metric} is missing or not finite")
        else:
            ok = c - h <= tolerance
            compared[metric] = Comparison(c, h, c - h, tolerance, ok)
            if not ok:
                regressions.append(f"{metric} regressed by {_delta(c - h)[1:]} (> tolerance "
                                   f"{tolerance:g})")

    cand, champ = _value(candidate, primary), _value(champion, primary)
    if cand is None or champ is None:
        # without both primary values there is no evidence of improvement: keep the champion
        compared[primary] = Comparison(cand, champ, None, -cfg.min_improvement, False)
        side = "candidate" if cand is None else "champion"
        return Decision(False, f"{side} has no finite {primary}; the champion stays", primary,
                        compared)
    delta = cand - champ
    improved = delta < -cfg.min_improvement and not same_model
    compared[primary] = Comparison(cand, champ, delta, -cfg.min_improvement, improved)
    headline = f"{primary} {cand:.2f} vs champion {champ:.2f} ({_delta(delta)})"
    if same_model:
        return Decision(False, f"{headline}: the champion's own model file (same weights hash); "
                        "a tie keeps the champion", primary, compared)
    if not improved:
        why = ("a tie keeps the champion" if delta == 0 else
               "worse than the champion" if delta > 0 else
               f"improvement not above min_improvement {cfg.min_improvement:g}")
        return Decision(False, f"{headline}: {why}", primary, compared)
    if regressions:
        return Decision(False, f"{headline} improved, but " + "; ".join(regressions), primary,
                        compared)
    return Decision(True, f"{headline} improved; no other metric regressed beyond its "
                    "tolerance", primary, compared)
