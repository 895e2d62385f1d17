"""`stdformer registry ...`: look at and move the registered model's aliases.

    stdformer registry list [--json]        versions with their metrics and aliases
    stdformer registry promote VERSION      make VERSION the champion (no gate)
    stdformer registry rollback             champion back to the version it replaced

Store: --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db (checked
reachable first). Model: --name (default "stdformer", the `register.model_name` default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stdformer.registry.config import GATE_METRICS, RegisterConfig
from stdformer.registry.store import ModelRegistry
from stdformer.tracking import check_tracking, default_tracking_uri


def _registry(args: argparse.Namespace):

    uri = args.tracking_uri or default_tracking_uri(Path.cwd())
    check_tracking(uri)
    return ModelRegistry(uri, args.name)


def format_table(rows: list[dict]) -> str:
    """Versions as a fixed-width text table (metrics in mm, '-' where missing)."""
    header = ["version", "aliases", *GATE_METRICS, "gate", "created"]
    lines = [header]
    for r in rows:
        metrics = [f"{r['metrics'][m]:.2f}" if m in r["metrics"] else "-" for m in GATE_METRICS]
        lines.append([str(r["version"]), ",".join(r["aliases"]) or "-", *metrics,
                      r["decision"] or "-", r["created"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def _list(args: argparse.Namespace) -> None:
    registry = _registry(args)
    rows = registry.table()
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    elif not rows:
        print(f"registered model {args.name!r} has no versions yet")
    else:
        print(format_table(rows))


def _promote(args: argparse.Namespace) -> None:
    print(_registry(args).promote(args.version)["message"])


def _rollback(args: argparse.Namespace) -> None:
    print(_registry(args).rollback()["message"])


def add_registry_commands(subparsers) -> None:
    """Add the `registry` command group to the top-level subparsers of `stdformer`."""
    group = subparsers.add_parser("registry", help="registered model versions and aliases",
                                  description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = group.add_subparsers(dest="cmd", required=True)

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help)
        p.add_argument("--name", default=RegisterConfig.model_name,
                       help="registered model name (default: %(default)s)")
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                       "sqlite:///<cwd>/mlflow.db)")
        p.set_defaults(func=func)
        return p

    command("list", "versions with their metrics and aliases", _list).add_argument(
        "--json", action="store_true", help="machine-readable output")
    command("promote", "make VERSION the champion (no gate)", _promote).add_argument(
        "version")
    command("rollback", "move champion back to the version it replaced", _rollback)
