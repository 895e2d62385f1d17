"""Prefect flows that orchestrate the DVC pipeline (they do not re-implement stages).

retrain.py:   the `retrain` flow (python -m flows.retrain): lock, overrides, `dvc status`, one
              task per DVC stage, a report artifact.
deploy.py:    `python -m flows.deploy` serves it on the cron schedule in params.yaml `schedule`.
schedule.py:  that section.  lock.py, guard.py: the retrain lock and the process that stops a
              killed run's processes.  overrides.py: params.yaml overrides, validated.
stop.py:      SIGTERM stops the running stage and ends the run cleanly, without retries.
leftovers.py: what a run that did not finish left (its overrides, a broken DVC rwlock), undone.
check_params.py: `python -m flows.check_params`: params.yaml checked before `make repro`.
tasks.py:     the Prefect tasks (stage runs and their output).  report.py: the report artifact.
"""

import os

# Prefect reads its settings when first imported, so they are set here, before any flow module
# imports it. Analytics on the temporary (ephemeral) API server race its fresh sqlite database
# and print a long "database is locked" traceback; its 20 s start-up limit is too tight on a
# busy 2-core machine. A value the user set wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
