"""The model registry: the `register` stage's library (log the evaluated model to MLflow,
register a version, apply the promotion gate) and the `stdformer registry` commands.

    register(paths, cfg, params, tracking_uri, artifact_root) -> registry.json record
    decide(candidate_metrics, champion_metrics | None, cfg) -> Decision   (the gate, pure)
    ModelRegistry(uri, name): table(), promote(version), rollback()
"""

from stdformer.registry.cli import add_registry_commands
from stdformer.registry.config import GATE_METRICS, RegisterConfig
from stdformer.registry.gate import Comparison, Decision, decide
from stdformer.registry.lineage import dvc_lineage, read_eval_metrics
from stdformer.registry.register import RegisterPaths, register
from stdformer.registry.store import CHALLENGER, CHAMPION, ModelRegistry

__all__ = [
    "CHALLENGER", "CHAMPION", "Comparison", "Decision", "GATE_METRICS", "ModelRegistry",
    "RegisterConfig", "RegisterPaths", "add_registry_commands", "decide", "dvc_lineage",
    "read_eval_metrics", "register",
]
