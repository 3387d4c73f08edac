"""Settings groups of the pipeline's inputs: which sources feed it, how text is prepared, the QA
files fine-tuning and evaluation read, and the reindex schedules."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from llmops_dagster.config.base import GROUP_CONFIG, env
from llmops_dagster.config.defaults import PROJECT_ROOT


class CorpusSettings(BaseSettings):
    """What feeds the pipeline (sources), how its text is prepared (→ ``TextResource``) and the
    QA files fine-tuning and evaluation read (→ ``DatasetsResource``)."""

    model_config = GROUP_CONFIG

    sample_data_dir: Path = Field(
        default=PROJECT_ROOT / "data" / "sample", validation_alias=env("LLMOPS_SAMPLE_DATA_DIR")
    )
    sources_config: Path = Field(
        default=PROJECT_ROOT / "sources.yaml",
        validation_alias=env("LLMOPS_SOURCES_CONFIG"),
        description="Which folders / REST APIs / SQL tables feed the pipeline.",
    )
    redact_pii: bool = Field(default=True, validation_alias=env("LLMOPS_REDACT_PII"))
    chunk_size_tokens: int = Field(
        default=200,
        validation_alias=env("LLMOPS_CHUNK_SIZE"),
        description="Fits all-MiniLM-L6-v2's 256-token window with room for special tokens.",
    )
    chunk_overlap_tokens: int = Field(default=32, validation_alias=env("LLMOPS_CHUNK_OVERLAP"))
    train_qa_path: Path = Field(
        default=PROJECT_ROOT / "data" / "train" / "qa.jsonl",
        validation_alias=env("LLMOPS_TRAIN_QA"),
        description="QA JSONL the LoRA dataset is built from (never the golden set).",
    )
    train_groups: str = Field(
        default="",
        validation_alias=env("LLMOPS_TRAIN_GROUPS"),
        description="The training audience, comma-separated (empty: public): who may read "
        "what an adapter learns, since it is served to everyone using its bundle. Training "
        "items and context beyond it are left out, and feedback beyond it goes to golden.",
    )
    golden_path: Path = Field(
        default=PROJECT_ROOT / "data" / "golden" / "qa.jsonl",
        validation_alias=env("LLMOPS_GOLDEN"),
        description="Golden QA JSONL (or a BEIR folder) the evaluation scores against.",
    )

    @field_validator("train_groups")
    @classmethod
    def _train_groups(cls, value: str) -> str:
        from llmops_dagster.access import PUBLIC, AccessError, normalize_audience

        try:
            groups = normalize_audience(value)
        except AccessError as exc:
            raise ValueError(f"LLMOPS_TRAIN_GROUPS: {exc}") from exc
        return ",".join(g for g in groups if g != PUBLIC)

    @property
    def train_group_list(self) -> list[str]:
        """The training audience's groups (empty: public only)."""
        return [g for g in self.train_groups.split(",") if g]


class ScheduleSettings(BaseSettings):
    """Cron strings of the reindex schedules."""

    model_config = GROUP_CONFIG

    reindex_cron: str = Field(default="0 * * * *", validation_alias=env("LLMOPS_REINDEX_CRON"))
    full_rebuild_cron: str = Field(
        default="0 3 * * 0", validation_alias=env("LLMOPS_FULL_REBUILD_CRON")
    )
