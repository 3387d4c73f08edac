"""Serving the champion bundle over HTTP: answers traced in MLflow, feedback stored for review."""
