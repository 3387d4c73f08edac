"""sources.yaml and the REST API YAML: shapes, relative paths, secrets only from env."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.sources.dlt_pipelines import make_destination
from llmops_dagster.sources.filesystem import list_current_files
from llmops_dagster.sources.rest_api import load_rest_api_config, parse_rest_api_config
from llmops_dagster.sources.source_config import (
    DEFAULT_MAX_BYTES,
    DestinationConfig,
    FilesystemSourceConfig,
    SourcesConfigError,
    SqlSourceConfig,
    default_sources_config,
    load_sources_config,
)

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "llmops_dagster" / "sources" / "rest_api.example.yaml"


def test_sources_yaml_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text(
        "filesystem: {root: docs, globs: ['**/*.md']}\n"
        "rest_api: {config_path: api.yaml}\n"
        "sql:\n  url: sqlite:///x.db\n  tables: [articles, {name: faq, primary_key: faq_id}]\n"
    )
    config = load_sources_config(tmp_path / "sources.yaml")
    assert config.filesystem is not None and config.filesystem.root == tmp_path / "docs"
    assert config.filesystem.max_bytes == DEFAULT_MAX_BYTES
    assert config.rest_api is not None and config.rest_api.config_path == tmp_path / "api.yaml"
    assert config.sql is not None
    articles, faq = config.sql.tables
    assert (articles.name, articles.primary_key, articles.cursor) == (
        "articles",
        "id",
        "updated_at",
    )
    assert faq.records is not None and faq.records.id_field == "faq_id"
    assert config.destination.name == "duckdb"


def test_sql_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops_dagster.sources.source_config import SqlSourceConfig

    config = SqlSourceConfig.model_validate({"url_env": "SRC_DB_URL", "tables": ["t"]})
    monkeypatch.delenv("SRC_DB_URL", raising=False)
    with pytest.raises(ValueError, match="SRC_DB_URL"):
        config.resolved_url()
    monkeypatch.setenv("SRC_DB_URL", "sqlite:///y.db")
    assert config.resolved_url() == "sqlite:///y.db"


def test_example_rest_yaml_reads_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_API_TOKEN", "s3cret")
    settings = load_rest_api_config(EXAMPLE)
    assert settings.dlt_config["client"]["auth"] == {"type": "bearer", "token": "s3cret"}
    (resource,) = settings.dlt_config["resources"]
    assert resource["table_name"] == "api_articles"
    assert "records" not in resource
    assert settings.mappings["api_articles"].text_fields == ["title", "body"]


def test_missing_token_env_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KB_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="KB_API_TOKEN"):
        load_rest_api_config(EXAMPLE)
    # The documents step reads mappings only and must not need the secret.
    assert load_rest_api_config(EXAMPLE, resolve_secrets=False).mappings


def test_literal_secret_in_yaml_is_refused() -> None:
    raw = {
        "client": {"base_url": "http://x", "auth": {"type": "bearer", "token": "oops"}},
        "resources": ["a"],
    }
    with pytest.raises(ValueError, match="token_env"):
        parse_rest_api_config(raw)


def test_string_resources_get_prefixed_tables() -> None:
    settings = parse_rest_api_config({"client": {"base_url": "http://x"}, "resources": ["users"]})
    assert settings.dlt_config["resources"] == [
        {"name": "users", "endpoint": {"path": "users"}, "table_name": "api_users"}
    ]


def test_duckdb_dataset_named_like_the_file_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path).override(warehouse={"duckdb_path": tmp_path / "raw.duckdb"})
    with pytest.raises(ValueError, match="equals the DuckDB file"):
        make_destination(settings.warehouse_target())


def test_postgres_destination_credentials_are_the_warehouse_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One setting decides the database: credentials_env may only repeat LLMOPS_WAREHOUSE_URL.
    config = DestinationConfig(name="postgres", credentials_env="WAREHOUSE_URL")
    url = "postgresql://u:p@localhost:5432/db"
    monkeypatch.setenv("WAREHOUSE_URL", url)
    with pytest.raises(ValueError, match="LLMOPS_WAREHOUSE_URL is unset"):
        make_destination(Settings().warehouse_target(), config)
    target = Settings().override(warehouse={"url": url}).warehouse_target()
    destination = make_destination(target, config)
    assert destination.destination_name == "postgres"
    assert destination.config_params["credentials"] == url


def test_list_current_files_matches_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.md", "sub/b.txt", "sub/c.bin", "d.PDF"):
        (tmp_path / name).write_bytes(b"x")
    assert list_current_files(tmp_path, ["**/*.md", "**/*.txt"]) == {"a.md", "sub/b.txt"}


# --- audiences ----------------------------------------------------------------------------------
def test_audiences_first_matching_glob_wins_and_unmatched_is_public(tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text(
        "filesystem:\n"
        "  root: docs\n"
        "  audiences:\n"
        "    - {glob: 'confidential/hr/notice-board.md', groups: [public]}\n"
        "    - {glob: 'confidential/hr/**', groups: [hr, Finance]}\n"
        "    - {glob: 'confidential/**', groups: [security]}\n"
    )
    config = load_sources_config(tmp_path / "sources.yaml")
    fs = config.filesystem
    assert fs is not None
    assert [rule.groups for rule in fs.audiences] == [["public"], ["finance", "hr"], ["security"]]
    assert fs.audience_for("confidential/hr/notice-board.md") == ["public"]
    assert fs.audience_for("confidential/hr/pay/bands.md") == ["finance", "hr"]
    assert fs.audience_for("confidential/security/runbook.txt") == ["security"]
    assert fs.audience_for("handbook/leave.md") == ["public"]
    assert fs.audience_for("confidential.md") == ["public"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            "[{glob: 'a/**', groups: [hr]}, {glob: 'hr/**', groups: ['HR Team']}]",
            r"sources.yaml: filesystem: filesystem.audiences\[1\] \(glob 'hr/\*\*'\): "
            r"invalid group name 'hr team'",
        ),
        (
            "[{glob: 'x/**', groups: []}]",
            r"filesystem.audiences\[0\] \(glob 'x/\*\*'\): groups is empty; write \[public\]",
        ),
        ("[{glob: 'x/**'}]", r"filesystem.audiences.0.groups: Field required"),
    ],
)
def test_bad_audience_rules_name_the_entry(tmp_path: Path, rules: str, message: str) -> None:
    (tmp_path / "sources.yaml").write_text(f"filesystem:\n  root: docs\n  audiences: {rules}\n")
    with pytest.raises(SourcesConfigError, match=message):
        load_sources_config(tmp_path / "sources.yaml")


def test_record_audience_field_is_for_records_not_files() -> None:
    sql = SqlSourceConfig.model_validate(
        {"url": "sqlite://", "tables": [{"name": "t", "records": {"audience_field": "acl"}}]}
    )
    assert sql.tables[0].records is not None and sql.tables[0].records.audience_field == "acl"
    # A field inside an export must not override (widen) the folder's glob rule.
    with pytest.raises(ValueError, match=r"filesystem\.records\.audience_field is not supported"):
        FilesystemSourceConfig(root=Path("x"), records={"audience_field": "acl"})  # type: ignore[arg-type]


def test_repository_sources_yaml_and_the_default_agree_on_the_sample_audiences() -> None:
    settings = Settings()
    repo = load_sources_config(settings.corpus.sources_config).filesystem
    default = default_sources_config(settings.corpus.sample_data_dir).filesystem
    assert repo is not None and default is not None
    assert repo.audiences == default.audiences
    assert [(rule.glob, rule.groups) for rule in repo.audiences] == [
        ("confidential/hr/**", ["hr"]),
        ("confidential/security/**", ["security"]),
    ]
    files = sorted(list_current_files(repo.root, repo.globs))
    confidential = {
        path: repo.audience_for(path) for path in files if repo.audience_for(path) != ["public"]
    }
    assert confidential == {
        "confidential/hr/disciplinary-procedure.md": ["hr"],
        "confidential/hr/salary-bands.md": ["hr"],
        "confidential/security/incident-response-runbook.txt": ["security"],
        "confidential/security/red-team-findings-2026.md": ["security"],
    }
    assert len(files) == 37  # 33 public files + 4 confidential
