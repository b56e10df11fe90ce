"""The settings in development mode, whatever the shell says: for the test suite and the type
checker (pyproject.toml), which must run on a fresh checkout with no SECRET_KEY.
os.environ carries the mode on to the processes they start (a test's Celery worker)."""

import os

os.environ["COSTLAB_DEV"] = "true"

from costlab.settings import *  # noqa: F403
