"""The review step: candidates from the serving store, accept / reject into temp golden and
training files (idempotent, never both), clear errors that leave the files untouched, and the
`llmops-dagster feedback` commands; an answer asked as `hr` never becomes training data its
training audience may not read, nor leaves the store with its text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmops_dagster.evaluate.golden import load_golden
from llmops_dagster.qa import load_qa_jsonl, qa_file_digest
from llmops_dagster.serving.answer_log import AnswerRecord, ServedChunk, ServingStore
from llmops_dagster.serving.review import (
    FeedbackReview,
    ReviewError,
    auto_target,
    item_id_for,
    write_candidates_jsonl,
)

pytestmark = pytest.mark.unit

DOWN = "tr-" + "a" * 32  # thumbs-down with a correction
BARE = "tr-" + "b" * 32  # thumbs-down, no correction
LIKED = "tr-" + "c" * 32  # thumbs-up only: not a candidate
NOCITE = "tr-" + "d" * 32  # correction, but the answer cited nothing
# Asked by an hr member, about the salary bands: restricted. Its hash sends `auto` to training.
HRQ = "tr-" + "e" * 31 + "1"
HR_TEXT = ("salary band P4", "68,500", "Curlew")  # in its question, answer, correction, comment


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        json.dumps(
            {
                "id": "q01",
                "question": "When was it founded?",
                "reference_answer": "In 2019.",
                "relevant_doc_ids": ["fs:handbook/welcome.md"],
                "type": "factual",
            }
        )
        + "\n"
    )
    train = tmp_path / "train.jsonl"
    # No trailing newline: an append must not glue two JSON objects onto one line.
    train.write_text(
        json.dumps({"id": "t01", "question": "Who?", "reference_answer": "Maren."}),
    )
    store = ServingStore(tmp_path / "serving.db")
    retrieved = [
        ServedChunk("c-exp-1", "fs:handbook/expenses.md", "Expenses", 0.5),
        ServedChunk("c-exp-2", "fs:handbook/expenses.md", "Expenses", 0.4),
        ServedChunk("c-leave", "fs:handbook/leave.md", "Leave", 0.3),
    ]
    cited_by_trace = {
        DOWN: ["c-exp-2", "c-leave", "c-exp-1"],
        BARE: ["c-leave"],
        LIKED: ["c-exp-1"],
        NOCITE: [],
        HRQ: ["c-exp-1"],
    }
    for trace_id, cited in cited_by_trace.items():
        hr = trace_id == HRQ
        store.record_answer(
            AnswerRecord(
                trace_id=trace_id,
                question="What is salary band P4?" if hr else f"question of {trace_id[3:6]}?",
                answer="68,500 (see Curlew)" if hr else "a wrong answer",
                cited_chunk_ids=cited,
                retrieved=retrieved,
                bundle_uri="models:/llmops-rag-bundle/2",
                bundle_version="2",
                total_ms=100.0,
                prompt_tokens=10,
                completion_tokens=3,
                cost_usd=0.0,
                asker_groups=["hr"] if hr else [],
                audience=["hr"] if hr else ["public"],
            )
        )
    store.record_feedback(DOWN, "ann", "down", correction="Within 30 days.", comment="too vague")
    store.record_feedback(DOWN, "bob", "up")
    store.record_feedback(BARE, "ann", "down")
    store.record_feedback(LIKED, "ann", "up")
    store.record_feedback(NOCITE, "bob", "up", correction="Tuesday and Thursday.")
    store.record_feedback(
        HRQ, "hr-ann", "down", correction="Band P4 is 68,500.", comment="Curlew has it"
    )
    return {"golden": golden, "train": train, "store": tmp_path / "serving.db"}


def _review(files: dict[str, Path], train_groups: tuple[str, ...] = ()) -> FeedbackReview:
    return FeedbackReview(
        files["store"], files["golden"], files["train"], train_groups=train_groups
    )


def _snapshot(files: dict[str, Path]) -> tuple[bytes, bytes]:
    return files["golden"].read_bytes(), files["train"].read_bytes()


def test_candidates_are_thumbs_down_or_corrected_answers(files: dict[str, Path]) -> None:
    candidates = _review(files).candidates()
    assert [c.trace_id for c in candidates] == [DOWN, BARE, NOCITE, HRQ]
    assert [c.audience for c in candidates] == [["public"]] * 3 + [["hr"]]
    down = candidates[0]
    assert (down.thumbs_down, down.thumbs_up, down.correction) == (1, 1, "Within 30 days.")
    assert down.comments == ["too vague"]
    assert down.cited_doc_ids == ["fs:handbook/expenses.md", "fs:handbook/leave.md"]
    assert (down.bundle_version, down.status) == ("2", "pending")
    assert candidates[1].correction is None and candidates[2].thumbs_down == 0


def test_accept_into_golden_is_idempotent_and_changes_only_the_golden_digest(
    files: dict[str, Path],
) -> None:
    review = _review(files)
    golden_before = load_golden(files["golden"]).version
    train_before = qa_file_digest(files["train"])

    result = review.accept(DOWN, reviewer="rev", to="golden")
    assert result.appended and result.target == "golden" and result.item_id == item_id_for(DOWN)
    assert result.golden_digest == load_golden(files["golden"]).version != golden_before
    assert result.train_digest == train_before  # never both sets
    item = load_golden(files["golden"]).items[-1]
    assert (item.id, item.question, item.reference_answer, item.type) == (
        "fb-aaaaaaaaaaaa",
        "question of aaa?",
        "Within 30 days.",
        "feedback",
    )
    assert item.relevant_doc_ids == ("fs:handbook/expenses.md", "fs:handbook/leave.md")

    snapshot = _snapshot(files)
    again = review.accept(DOWN, to="train", answer="something else")
    assert not again.appended and again.target == "golden"  # decided: nothing moves
    assert _snapshot(files) == snapshot
    (accepted,) = review.candidates("accepted")
    assert (accepted.trace_id, accepted.reviewer, accepted.item_id) == (DOWN, "rev", item.id)
    assert review.candidates("pending") == [c for c in review.candidates() if c.trace_id != DOWN]


def test_accept_into_train_with_an_answer_and_documents(files: dict[str, Path]) -> None:
    review = _review(files)
    golden_before = files["golden"].read_bytes()
    result = review.accept(BARE, answer="  The director approves.  ", to="train")
    assert result.appended and files["golden"].read_bytes() == golden_before
    items = load_qa_jsonl(files["train"])
    assert [i.id for i in items] == ["t01", "fb-bbbbbbbbbbbb"]
    assert items[1].reference_answer == "The director approves."
    assert items[1].relevant_doc_ids == ("fs:handbook/leave.md",)
    assert (items[1].type, items[1].extra) == ("feedback", {"source_trace_id": BARE})
    assert result.train_digest == qa_file_digest(files["train"])


def test_a_golden_item_keeps_the_askers_groups(files: dict[str, Path]) -> None:
    review = _review(files)
    assert review.candidate(HRQ).asker_groups == ["hr"]
    review.accept(HRQ, answer="Ask HR.", to="golden")
    item = load_golden(files["golden"]).items[-1]
    assert item.question == "What is salary band P4?" and item.groups == ("hr",)
    review.accept(DOWN, to="golden")  # asked publicly: no groups written
    assert "groups" not in json.loads(files["golden"].read_text().splitlines()[-1])


def test_auto_routes_by_trace_id(files: dict[str, Path]) -> None:
    result = _review(files).accept(DOWN)
    assert result.target == auto_target(DOWN)
    assert auto_target(DOWN) == auto_target(DOWN)
    assert {auto_target(f"tr-{i:032x}") for i in range(8)} == {"golden", "train"}


def test_bad_input_is_refused_and_leaves_the_files_untouched(files: dict[str, Path]) -> None:
    review = _review(files)
    snapshot = _snapshot(files)
    with pytest.raises(ReviewError, match="unknown trace id 'tr-nope'"):
        review.accept("tr-nope")
    with pytest.raises(ReviewError, match="has no correction: give the reference answer"):
        review.accept(BARE, to="golden")
    with pytest.raises(ReviewError, match="is not a feedback candidate"):
        review.accept(LIKED, answer="x")
    with pytest.raises(ReviewError, match="cited no document"):
        review.accept(NOCITE, to="golden")
    assert _snapshot(files) == snapshot
    assert review.candidates("accepted") == []
    # With the documents named, the same candidate is accepted.
    assert review.accept(NOCITE, to="golden", doc_ids=["fs:handbook/remote-work.md"]).appended


def test_reject_then_accept_but_never_reject_an_accepted_one(files: dict[str, Path]) -> None:
    review = _review(files)
    snapshot = _snapshot(files)
    assert review.reject(BARE, reviewer="rev").status == "rejected"
    assert _snapshot(files) == snapshot
    assert [c.trace_id for c in review.candidates("rejected")] == [BARE]
    # A change of mind: a rejected candidate can still be accepted.
    assert review.accept(BARE, answer="The director.", to="train").candidate.status == "accepted"
    with pytest.raises(ReviewError, match="was accepted into the train set"):
        review.reject(BARE)


def test_a_malformed_target_file_is_refused(files: dict[str, Path]) -> None:
    files["golden"].write_text(files["golden"].read_text() + "{not json\n")
    snapshot = _snapshot(files)
    with pytest.raises(ReviewError, match=r"golden\.jsonl:2"):
        _review(files).accept(DOWN, to="golden")
    assert _snapshot(files) == snapshot


def test_training_refuses_what_its_audience_may_not_read_and_says_why(
    files: dict[str, Path],
) -> None:
    review = _review(files)
    snapshot = _snapshot(files)
    with pytest.raises(ReviewError) as refused:
        review.accept(HRQ, to="train")
    message = str(refused.value)
    assert "readable only by hr" in message and "training audience (public" in message
    assert "LLMOPS_TRAIN_GROUPS" in message and "--to golden" in message
    assert _snapshot(files) == snapshot and review.candidate(HRQ).status == "pending"


def test_auto_sends_a_restricted_candidate_to_golden_and_says_so(files: dict[str, Path]) -> None:
    assert auto_target(HRQ) == "train"  # what the hash alone would do
    result = _review(files).accept(HRQ)
    assert result.target == "golden" and result.appended
    assert result.note == (
        "routed to the golden set: readable only by hr, which the training audience "
        "(public, LLMOPS_TRAIN_GROUPS) cannot read"
    )
    assert [i.id for i in load_qa_jsonl(files["train"])] == ["t01"]
    assert load_golden(files["golden"]).items[-1].groups == ("hr",)


def test_a_training_audience_that_may_read_it_takes_it_with_its_groups(
    files: dict[str, Path],
) -> None:
    result = _review(files, train_groups=("hr",)).accept(HRQ, to="auto")
    assert (result.target, result.note) == ("train", None)
    item = load_qa_jsonl(files["train"])[-1]
    assert (item.id, item.groups) == (item_id_for(HRQ), ("hr",))
    assert item.reference_answer == "Band P4 is 68,500."


def test_restricted_candidates_leave_the_store_without_their_text(
    files: dict[str, Path], tmp_path: Path
) -> None:
    candidates = _review(files).candidates()
    path = write_candidates_jsonl(candidates, tmp_path / "candidates.jsonl")
    rows = {row["trace_id"]: row for row in map(json.loads, path.read_text().splitlines())}
    assert set(rows) == {DOWN, BARE, NOCITE, HRQ}
    mark = "[withheld: audience hr]"
    hr = rows[HRQ]
    assert (hr["question"], hr["answer"], hr["correction"], hr["comments"]) == (
        mark, mark, mark, [mark]
    )  # fmt: skip
    assert (hr["cited_doc_ids"], hr["audience"], hr["text_withheld"]) == ([], ["hr"], True)
    assert (hr["thumbs_down"], hr["cited_chunk_ids"]) == (1, ["c-exp-1"])
    assert not [text for text in HR_TEXT if text in path.read_text()]
    public = rows[DOWN]  # a public answer's row keeps its text
    assert (public["correction"], public["comments"], public["text_withheld"]) == (
        "Within 30 days.", ["too vague"], False
    )  # fmt: skip
    # The reviewer on the server host still reads it all.
    assert _review(files).candidate(HRQ).correction == "Band P4 is 68,500."


def _env(files: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    return {
        "LLMOPS_HOME": str(tmp_path / "home"),
        "LLMOPS_SERVING_STORE": str(files["store"]),
        "LLMOPS_GOLDEN": str(files["golden"]),
        "LLMOPS_TRAIN_QA": str(files["train"]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "COLUMNS": "300",  # the list's table unwrapped, as on a wide terminal
    }


def test_cli_list_accept_reject(files: dict[str, Path], tmp_path: Path) -> None:
    from llmops_dagster.cli import main

    runner, env = CliRunner(), _env(files, tmp_path)
    listed = runner.invoke(main, ["feedback", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [c["trace_id"] for c in json.loads(listed.output)] == [DOWN, BARE, NOCITE, HRQ]
    table = runner.invoke(main, ["feedback", "list"], env=env)
    assert table.exit_code == 0 and "tr-aaaa" in table.output

    snapshot = _snapshot(files)
    refused = runner.invoke(main, ["feedback", "accept", BARE, "--to", "golden"], env=env)
    assert refused.exit_code == 1
    assert "has no correction: give the reference answer with --answer" in refused.output
    unknown = runner.invoke(main, ["feedback", "reject", "tr-nope"], env=env)
    assert unknown.exit_code == 1 and "unknown trace id 'tr-nope'" in unknown.output
    assert _snapshot(files) == snapshot

    accepted = runner.invoke(
        main, ["feedback", "accept", DOWN, "--to", "golden", "--reviewer", "rev"], env=env
    )
    assert accepted.exit_code == 0, accepted.output
    digest = load_golden(files["golden"]).version
    assert f"golden digest:   {digest}" in accepted.output
    assert f"training digest: {qa_file_digest(files['train'])}" in accepted.output
    assert "fb-aaaaaaaaaaaa appended to the golden set" in accepted.output
    again = runner.invoke(main, ["feedback", "accept", DOWN], env=env)
    assert again.exit_code == 0 and "already accepted: unchanged" in again.output
    assert load_golden(files["golden"]).version == digest

    refused = runner.invoke(main, ["feedback", "accept", HRQ, "--to", "train"], env=env)
    assert refused.exit_code == 1 and "cannot read it" in refused.output
    assert "--to golden" in refused.output
    listed = runner.invoke(main, ["feedback", "list"], env=env)
    assert "68,500" in listed.output  # the review command reads the store on the server host

    rejected = runner.invoke(main, ["feedback", "reject", BARE], env=env)
    assert rejected.exit_code == 0 and f"{BARE}: rejected" in rejected.output
    pending = runner.invoke(main, ["feedback", "list", "--json"], env=env)
    assert [c["trace_id"] for c in json.loads(pending.output)] == [NOCITE, HRQ]


def test_the_candidates_table_is_replaced_on_either_warehouse(
    files: dict[str, Path], warehouse
) -> None:
    from llmops_dagster.serving.review import write_candidates_table

    warehouse.ensure_schema("llmops")

    candidates = _review(files).candidates()
    table = "llmops.feedback_candidates"
    assert write_candidates_table(warehouse, candidates, table) == 4
    # The warehouse is read beyond hr: the row is there, its text is not.
    (hr_row,) = warehouse.fetchall(
        f"SELECT question, answer, correction, comments, cited_doc_ids, audience, text_withheld"
        f" FROM {table} WHERE trace_id = '{HRQ}'"
    )
    mark = "[withheld: audience hr]"
    assert (hr_row[0], hr_row[1], hr_row[2], list(hr_row[3]), list(hr_row[4])) == (
        mark, mark, mark, [mark], []
    )  # fmt: skip
    assert (list(hr_row[5]), hr_row[6]) == (["hr"], True)
    dumped = json.dumps(warehouse.fetchall(f"SELECT * FROM {table}"), default=str)
    assert not [text for text in HR_TEXT if text in dumped]
    assert write_candidates_table(warehouse, candidates[:1], table) == 1  # replaced, not added
    rows = warehouse.fetchall(f"SELECT trace_id, comments, cited_doc_ids, thumbs_up FROM {table}")
    assert [(r[0], list(r[1]), list(r[2]), r[3]) for r in rows] == [
        (DOWN, ["too vague"], ["fs:handbook/expenses.md", "fs:handbook/leave.md"], 1)
    ]
    assert write_candidates_table(warehouse, [], table) == 0
    assert warehouse.fetchall(f"SELECT count(*) FROM {table}") == [(0,)]


def test_the_serving_metrics_table_is_replaced_on_either_warehouse(warehouse) -> None:
    from assets.serving import METRICS_TABLE, _write_metrics_table
    from llmops_dagster.serving.daily_report import ServedTrace, serving_report

    warehouse.ensure_schema("llmops")

    traces = [
        ServedTrace("t1", "2026-12-01", "3", 100.0, 10, 5, 0.25, False, 1, 0.5),
        ServedTrace("t2", "2026-12-01", "3", 300.0, 10, 5, 0.25, True, 0, None),
    ]
    _write_metrics_table(warehouse, serving_report(traces, [("t1", "down")]).rows)
    _write_metrics_table(warehouse, serving_report(traces[:1], []).rows)  # replaced
    rows = warehouse.fetchall(
        f"SELECT day, bundle_version, requests, p95_latency_ms, no_answer_rate, cost_usd "
        f"FROM {METRICS_TABLE}"
    )
    assert rows == [("2026-12-01", "3", 1, 100.0, 0.0, 0.25)]


def test_cli_says_auto_sent_a_restricted_candidate_to_golden(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from llmops_dagster.cli import main

    routed = CliRunner().invoke(main, ["feedback", "accept", HRQ], env=_env(files, tmp_path))
    assert routed.exit_code == 0, routed.output
    assert f"{HRQ}: routed to the golden set: readable only by hr" in routed.output
    assert "appended to the golden set" in routed.output


def test_cli_takes_the_training_audience_from_its_setting(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from llmops_dagster.cli import main

    env = {**_env(files, tmp_path), "LLMOPS_TRAIN_GROUPS": "hr"}
    allowed = CliRunner().invoke(main, ["feedback", "accept", HRQ, "--to", "train"], env=env)
    assert allowed.exit_code == 0, allowed.output
    assert "appended to the train set" in allowed.output
    assert load_qa_jsonl(files["train"])[-1].groups == ("hr",)
