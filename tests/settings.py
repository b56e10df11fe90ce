"""costlab's settings for the test run: development mode (costlab.dev_settings), with its
var folder (SQLite files, broker folders,
static root, uploads) in a temporary folder, so a run leaves the checkout as it found it.

Set before costlab.settings is imported, because that import already creates folders.
Subprocesses the tests start (a Celery worker, manage.py) inherit the variable, so they
share the same folder; so do pytest-xdist's workers, which the first process outlives."""

import atexit
import os
import shutil
import tempfile

if "COSTLAB_VAR_DIR" not in os.environ:
    os.environ["COSTLAB_VAR_DIR"] = tempfile.mkdtemp(prefix="costlab-test-var-")
    atexit.register(shutil.rmtree, os.environ["COSTLAB_VAR_DIR"], ignore_errors=True)

# A Redis cache (CI's, a developer's) outlives a run, and so would its counters: the log-in
# and endpoint-key limits would carry one run's failures into the next and refuse 127.0.0.1.
# Each run keys its entries under its own prefix, which workers inherit like the folder.
os.environ.setdefault("COSTLAB_CACHE_PREFIX", os.path.basename(os.environ["COSTLAB_VAR_DIR"]))

from costlab.dev_settings import *  # noqa: F403
