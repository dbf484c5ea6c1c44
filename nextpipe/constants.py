"""Constants shared across nextpipe: environment variable names and node states."""

ENV_APP_ID = "NEXTMV_APP_ID"
"""Environment variable holding the id of the Nextmv application the workflow runs as."""

ENV_RUN_ID = "NEXTMV_RUN_ID"
"""Environment variable holding the id of the Nextmv run the workflow runs as."""

ENV_LOCAL_APPS = "NEXTPIPE_LOCAL_APPS"
"""Environment variable mapping app ids to local app directories (``id=dir;id2=dir2``)."""

STATUS_PENDING = "pending"
"""A node that has not started yet."""

STATUS_RUNNING = "running"
"""A node that is executing."""

STATUS_SUCCEEDED = "succeeded"
"""A node that finished (or a skipped optional step's node)."""

STATUS_FAILED = "failed"
"""A node that raised, whose app run failed, or that was stopped because the flow failed."""

ENV_CACHE_DIR = "NEXTPIPE_CACHE_DIR"
"""Environment variable naming the run cache's directory (``Configuration.cache_dir`` wins over it)."""

DEFAULT_CACHE_MAX_AGE = 7 * 24 * 3600.0
"""Default age (s) after which a stored run is no longer reused: 7 days."""
