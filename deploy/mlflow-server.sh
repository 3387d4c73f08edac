#!/usr/bin/env bash
# An MLflow tracking server on a PostgreSQL backend store (runs, registry, aliases, prompts,
# traces) that proxies artifacts (adapters, bundles, evaluation tables) to one destination, so
# clients need only its URL. Then point the pipeline, `serve` and the sensors at it:
#   MLFLOW_TRACKING_URI=http://mlflow.internal:5000
# Proven by tests/integration/test_model_assets.py::test_graph_trains_evaluates_gates_and_traces
# (the whole asset graph through a server started the same way by
# llmops_dagster.serving.testbed.start_mlflow_server(backend_store_uri=...), with a local
# folder as the artifacts destination). An object store (s3://, gs://, ...) needs its client
# package (boto3, google-cloud-storage) installed where the server runs; not tested here.
# The database must exist; MLflow creates its tables. Name the driver: SQLAlchemy 2.1 maps a
# bare postgresql:// to psycopg 3, while the project installs psycopg2.
set -euo pipefail
: "${MLFLOW_BACKEND_URI:?e.g. postgresql+psycopg2://mlflow:\$PASSWORD@db.internal:5432/mlflow}"
: "${MLFLOW_ARTIFACTS:?e.g. s3://bucket/mlflow or /srv/mlflow/artifacts}"
# MLflow 3 answers only Host headers of localhost and private IPs unless told otherwise: a
# server reached by name (http://mlflow.internal:5000) needs MLFLOW_ALLOWED_HOSTS.
extra=()
if [[ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]]; then
  extra+=(--allowed-hosts "${MLFLOW_ALLOWED_HOSTS}")
fi
exec mlflow server \
  --backend-store-uri "${MLFLOW_BACKEND_URI}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS}" \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}" "${extra[@]}"
