"""Prefect flows that orchestrate the DVC pipeline (they do not re-implement stages).

retrain.py: the `retrain` flow (dvc status, then one task per DVC stage, report artifact).
deploy.py:  `python -m flows.deploy` serves it on the cron schedule in params.yaml `schedule`.
"""
