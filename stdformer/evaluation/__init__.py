"""The `evaluate` stage's library: every model on the test split (scored by `stdformer.scoring`),
then the reports (json, parquet, csv, charts, mesh overlays)."""

from stdformer.evaluation.config import DatasetSpec, EvaluateConfig
from stdformer.evaluation.run import (
    EvaluatePaths,
    evaluate,
    load_models,
    write_outputs,
)

__all__ = ["DatasetSpec", "EvaluateConfig", "EvaluatePaths", "evaluate", "load_models",
           "write_outputs"]
