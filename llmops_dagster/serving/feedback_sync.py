"""User feedback → MLflow assessments on the answer's trace, off the request path.

The feedback is already stored (:mod:`llmops_dagster.serving.answer_log`) when this runs; copying it
to MLflow (``user_rating`` feedback, ``expected_answer`` expectation for a correction) may fail
while the trace is still in the exporter's queue or the store is down, so it retries a few times
in a background thread and counts what it finally could not write.

On a restricted answer (:mod:`llmops_dagster.serving.disclosure`) only the rating reaches
MLflow: the comment and the correction are the user's text about a confidential answer, so the
rationale is left out and the expectation holds the ``[withheld: audience …]`` marker (it still
shows that a correction exists; the text stays in the serving store).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from llmops_dagster.serving import trace_keys as keys
from llmops_dagster.serving.answer_log import FeedbackRecord
from llmops_dagster.serving.disclosure import PUBLIC_AUDIENCE, is_restricted, withheld

log = logging.getLogger(__name__)


class AssessmentWriter:
    def __init__(self, *, attempts: int = 5, delay_s: float = 1.0, max_queue: int = 1000) -> None:
        self.attempts = attempts
        self.delay_s = delay_s
        self._queue: queue.Queue[tuple[FeedbackRecord, list[str]] | None] = queue.Queue(
            maxsize=max_queue
        )
        self.written = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="assessments", daemon=True)
        self._thread.start()

    def submit(self, record: FeedbackRecord, audience: list[str] | None = None) -> None:
        """Queue ``record`` (on an answer readable by ``audience``; None: public)."""
        try:
            self._queue.put_nowait((record, list(audience or PUBLIC_AUDIENCE)))
        except queue.Full:
            self.failed += 1

    def _write(self, record: FeedbackRecord, audience: list[str]) -> None:
        import mlflow
        from mlflow.entities import AssessmentSource, AssessmentSourceType

        source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=record.user_id)
        # One assessment per (trace, user, name): re-sent feedback replaces the user's earlier
        # one instead of piling up (feedback is idempotent per trace and user).
        trace = mlflow.get_trace(record.trace_id)
        if trace is None:
            raise LookupError(f"trace {record.trace_id} not in the tracking store yet")
        for old in trace.info.assessments or []:
            if old.source.source_id == record.user_id and old.name in (
                keys.FEEDBACK_RATING,
                keys.EXPECTED_ANSWER,
            ):
                mlflow.delete_assessment(record.trace_id, old.assessment_id)
        restricted = is_restricted(audience)
        mlflow.log_feedback(
            trace_id=record.trace_id,
            name=keys.FEEDBACK_RATING,
            value=record.rating == "up",
            source=source,
            rationale=None if restricted else record.comment or None,
        )
        if record.correction:
            mlflow.log_expectation(
                trace_id=record.trace_id,
                name=keys.EXPECTED_ANSWER,
                value=withheld(audience) if restricted else record.correction,
                source=source,
            )

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            record, audience = item
            for attempt in range(1, self.attempts + 1):
                try:
                    self._write(record, audience)
                except Exception as exc:
                    if attempt == self.attempts:
                        self.failed += 1
                        log.warning("feedback on %s not copied to MLflow: %s", record.trace_id, exc)
                    else:
                        time.sleep(self.delay_s * attempt)
                else:
                    self.written += 1
                    break
            self._queue.task_done()

    def drain(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
