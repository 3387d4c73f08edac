"""A golden set for a new corpus: `golden_candidates` drafts questions, reference answers and
relevant documents from the indexed chunks; `llmops-dagster golden accept` moves a reviewed one
into the golden set (whose new digest the evaluation inputs sensor re-evaluates on)."""

import dagster as dg
from pydantic import Field

from assets._metadata import md
from llmops_dagster.resources import (
    DatasetsResource,
    MlflowResource,
    ModelsResource,
    WarehouseResource,
)

DRAFTERS = ("templates", "generator")


class GoldenCandidatesConfig(dg.Config):
    audience: list[str] = Field(default_factory=lambda: ["public"])
    """Groups whose documents candidates are drafted from (public: public documents only). A
    candidate keeps the groups its text came through, so evaluation asks it as them."""
    # = evaluate.golden_candidates.DEFAULT_MAX_ITEMS, spelled out: importing the library here
    # would load the drafter into every process that loads the code location.
    max_items: int = Field(default=40, ge=1)
    """Candidates per materialization: a seeded sample spread over documents."""
    seed: int = 13
    """Seed of the sample."""
    drafter: str = "templates"
    """templates | generator: the configured generator writes each sampled candidate's question,
    checked; a failed draft keeps the template's (`evaluate/golden_drafter.py`)."""


@dg.asset(
    deps=["search_index"],
    group_name="evaluate",
    kinds={"python", "mlflow"},
    owners=["team:ml-platform"],
)
def golden_candidates(
    context: dg.AssetExecutionContext,
    config: GoldenCandidatesConfig,
    datasets: DatasetsResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    models: ModelsResource,
):
    """Golden candidates drafted from the active chunks the `audience` may read (never from
    other documents: `n_chunks_dropped_audience`), one question and one-sentence reference
    answer per chunk, spread over documents (`n_documents`), none restating a golden item
    (`n_dropped_golden_overlap`) or another candidate. Written to `golden_candidates.jsonl` in
    the datasets folder as pending; decided candidates are kept and not proposed again. Review
    with `llmops-dagster golden list|accept|reject`. `drafter: generator`: the configured
    generator writes the questions (`n_generator_drafts`, `n_template_fallbacks`)."""
    import functools
    from pathlib import Path

    from llmops_dagster.access import AccessError, Principal
    from llmops_dagster.evaluate.golden import load_golden
    from llmops_dagster.evaluate.golden_candidates import (
        CANDIDATES_FILE,
        GoldenReview,
        draft_golden_candidates,
    )
    from llmops_dagster.train.raft import read_chunk_records

    if config.drafter not in DRAFTERS:
        raise dg.Failure(
            f"golden_candidates config drafter: {config.drafter!r}, expected one of {DRAFTERS}"
        )
    try:
        audience = Principal("golden", frozenset(config.audience) - {"public"})
    except AccessError as exc:
        raise dg.Failure(f"golden_candidates config audience: {exc}") from exc
    with warehouse.get_connection() as con:
        chunks = read_chunk_records(con)
    if not any(audience.can_read(c.audience) for c in chunks):
        raise dg.Failure(
            f"the warehouse ({warehouse.location}) holds no active chunk the audience "
            f"{audience.visible_groups} (golden_candidates config audience) may read: "
            "materialize chunks first"
        )
    golden = load_golden(datasets.golden_path)
    review = GoldenReview(Path(datasets.datasets_dir) / CANDIDATES_FILE, datasets.golden_path)
    question_drafter = None
    if config.drafter == "generator":
        from llmops_dagster.evaluate.golden_drafter import draft_with_generator

        question_drafter = functools.partial(
            draft_with_generator,
            generator=models.generator(),
            golden_questions=[item.question for item in golden.items],
        )

    draft = draft_golden_candidates(
        chunks,
        audience=audience,
        golden=golden.items,
        decided=review.decided_ids(),
        max_items=config.max_items,
        seed=config.seed,
        question_drafter=question_drafter,
    )
    review.replace_pending(draft.candidates)
    counts = draft.metadata()
    context.log.info(
        f"{counts['n_candidates']} golden candidates from {counts['n_documents']} documents; "
        f"{counts['n_chunks_dropped_audience']} chunks outside the audience, "
        f"{counts['n_dropped_golden_overlap']} drafts restating a golden item "
        f"({draft.report.rule.describe()})"
    )
    audience_label = ",".join(audience.visible_groups)
    lineage = mlflow.log_asset_run(
        context,
        params={
            "audience": audience_label,
            "max_items": config.max_items,
            "seed": config.seed,
            "drafter": config.drafter,
        },
        metrics=counts,
        tags={"golden.digest": golden.version},
    )
    preview = [
        {
            "id": c.id,
            "question": c.item.question,
            "reference_answer": (c.item.reference_answer or "")[:120],
            "doc_id": c.item.relevant_doc_ids[0],
        }
        for c in draft.candidates[:10]
    ]
    return dg.MaterializeResult(
        metadata={
            **lineage,
            **counts,
            "audience": audience_label,
            "drafter": config.drafter,
            **(
                {"fallback_reasons": dg.MetadataValue.json(dict(draft.generator.fallback_reasons))}
                if draft.generator is not None
                else {}
            ),
            "golden_digest": golden.version,
            "path": str(review.path),
            "preview": md(preview, ["id", "question", "reference_answer", "doc_id"]),
        }
    )
