"""The `evaluate` stage's library: every model on the test split (scored by `stdformer.scoring`),
then the reports (json, parquet, csv, charts, mesh overlays)."""

from stdformer.evaluation.config import EvaluateConfig
from stdformer.evaluation.run import (
    EvaluatePaths,
    evaluate,
    load_predictors,
    write_outputs,
)

__all__ = ["EvaluateConfig", "EvaluatePaths", "evaluate", "load_predictors", "write_outputs"]
