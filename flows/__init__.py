"""Prefect flows that orchestrate the DVC pipeline (they do not re-implement stages)."""
