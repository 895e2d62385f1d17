"""The `retrain-report` markdown artifact: the stages, metrics/eval.json against the champion,
and the promotion decision of the registration this run made (metrics/registry.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

EVAL_METRICS = "metrics/eval.json"
REGISTRY = "metrics/registry.json"
REPORT_KEY = "retrain-report"


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
    `candidate`), else metrics/eval.json's per-dataset tables (an older file's `overall`
    section, or all of it)."""
    if decision["candidate"]:
        return decision["candidate"]
    if evaluation:
        return flatten_metrics(evaluation.get("datasets") or evaluation.get("overall", evaluation))
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
    # Only a registration made by this run is reported as a decision (registry.json persists).
    registered = bool(result.get("registered"))
    decision = read_decision(_read_json(project / REGISTRY) if registered else None)
    candidate = candidate_metrics(_read_json(project / EVAL_METRICS), decision)
    champion = decision["champion"]
    lines += ["", "## Metrics against the champion" if registered else
              f"## Metrics (`{EVAL_METRICS}`)", ""]
    if candidate:
        lines += ["| metric | this model | champion | change |", "|---|---:|---:|---:|"]
        for name in sorted(candidate.keys() | champion.keys()):
            new, old = candidate.get(name), champion.get(name)
            change = None if new is None or old is None else new - old
            lines.append(f"| {name} | {_fmt(new)} | {_fmt(old)} | "
                         f"{'-' if change is None else f'{change:+.4g}'} |")
    else:
        lines += [f"No `{EVAL_METRICS}` (the pipeline has no evaluate stage yet)."]
    lines += ["", "## Promotion decision", ""]
    if decision["decision"]:
        detail = f" ({decision['detail']})" if decision["detail"] else ""
        reason = f": {decision['reason']}" if decision["reason"] else ""
        lines += [f"**{decision['decision']}**{detail}{reason}"]
    else:
        lines += ["No model was registered in this run, so there is no decision "
                  f"(`{REGISTRY}` holds the last registration's)."]
    return "\n".join(lines) + "\n"
