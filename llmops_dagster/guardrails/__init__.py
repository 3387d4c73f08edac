"""Guardrails around answering: prompt-injection screening and per-caller rate limits."""
