"""MLflow stores for tests: a fresh SQLite store is a copy of one made once per session.

Creating an MLflow SQLite store runs every schema migration (8-10 s on a busy 2-core box);
copying a store that has just been created and holds nothing takes 0.1 s and gives the same
database: the same tables at the same schema version, only the ``Default`` experiment.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


def sqlite_store(db: Path) -> str:
    """The tracking URI of a new, empty MLflow SQLite store at ``db`` (left alone if it exists:
    a test may point twice at the same home)."""
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_store(), db)
    return f"sqlite:///{db}"


@functools.cache
def _empty_store() -> Path:
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="llmops-test-mlflow-"))
    atexit.register(shutil.rmtree, folder, True)
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()  # runs the migrations
    return db
