"""Prefect reads its settings when first imported: test modules that import `flows` or Prefect
import this module first, so the session's Prefect uses a private home (never ~/.prefect)."""

import atexit
import os
import shutil
import tempfile

PREFECT_HOME = tempfile.mkdtemp(prefix="prefect-home-")
atexit.register(shutil.rmtree, PREFECT_HOME, True)
os.environ.update(PREFECT_HOME=PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90", DVC_NO_ANALYTICS="1")
