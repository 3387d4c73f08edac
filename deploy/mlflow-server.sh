#!/usr/bin/env bash
# An MLflow tracking server with a database backend and an object store for artifacts.
# Then point the pipeline at it: MLFLOW_TRACKING_URI=http://mlflow.internal:5000
set -euo pipefail
exec mlflow server \
  --backend-store-uri "${MLFLOW_BACKEND_URI:?postgresql://user:pw@db/mlflow}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:?s3://bucket/mlflow}" \
  --host 0.0.0.0 --port 5000
