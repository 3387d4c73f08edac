"""The PostgreSQL adapter: the pipeline's own tables next to dlt's raw tables in one database.

psycopg2, not SQLAlchemy: every statement here is hand-written SQL, and the one thing that
matters for speed — bulk writes — is COPY, which psycopg2 exposes directly (``copy_expert``).
Bulk data arrives as Arrow, is written as CSV into memory and COPYed into a temporary table;
``INSERT … SELECT … ON CONFLICT`` then does the set-based work, exactly as on DuckDB.
Statements use ``?`` placeholders (the stores' portable SQL), rewritten to psycopg2's ``%s``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from llmops_dagster.warehouse.base import PIPELINE_SCHEMA, Warehouse, WarehouseError

URL_SETTING = "LLMOPS_WAREHOUSE_URL"

# Type OIDs (pg_type) → Arrow types, for results. Anything else is left to Arrow's inference.
_ARROW_BY_OID: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    114: pa.string(),  # json: kept as text, like DuckDB's JSON columns
    700: pa.float32(),
    701: pa.float64(),
    1043: pa.string(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1009: pa.list_(pa.string()),
    1015: pa.list_(pa.string()),
    1021: pa.list_(pa.float32()),
    1022: pa.list_(pa.float64()),
    1007: pa.list_(pa.int32()),
    1016: pa.list_(pa.int64()),
    3802: pa.string(),  # jsonb
}


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and lineage)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style ``postgresql+psycopg2://`` URL as libpq accepts it."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


def to_pyformat(sql: str) -> str:
    """``?`` → ``%s`` and ``%`` → ``%%`` outside quoted literals and identifiers."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        return {"?": "%s", "%": "%%"}.get(token, token)

    return _PLACEHOLDER.sub(swap, sql)


# --- Arrow → COPY (CSV) ------------------------------------------------------------------------


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "TEXT"
    if pa.types.is_null(arrow_type):
        return "TEXT"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_int8(arrow_type) or pa.types.is_int16(arrow_type):
        return "SMALLINT"
    if pa.types.is_int32(arrow_type):
        return "INTEGER"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_float32(arrow_type):
        return "REAL"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BYTEA"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"{_pg_type(arrow_type.value_type)}[]"
    raise WarehouseError(f"no PostgreSQL type for the Arrow type {arrow_type}")


def _array_literals(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A list column as PostgreSQL array literals (``{"a","b"}``, ``{0.1,2.5}``), vectorised.

    Floats are cast by Arrow, which writes the shortest text that reads back to the same
    float32/float64 bit for bit; strings are quoted and escaped element by element.
    """
    import pyarrow.compute as pc

    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = lists.values  # all of them: the offsets below index into this very array
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
        elements = pc.binary_join_element_wise('"', escaped, '"', "")
        elements = pc.if_else(pc.is_null(values), pa.scalar("NULL"), elements)
    else:
        elements = pc.fill_null(pc.cast(values, pa.string()), "NULL")
    rebuilt = pa.ListArray.from_arrays(lists.offsets, elements, mask=lists.is_null())
    joined = pc.binary_join(rebuilt, ",")
    return pc.binary_join_element_wise("{", joined, "}", "")


def arrow_to_csv(table: pa.Table) -> io.BytesIO:
    """``table`` as COPY ``FORMAT csv``, written by Arrow's C++ CSV writer: every valid value
    quoted and NULL an empty unquoted field (so an empty string stays an empty string), list
    columns turned into array literals first. ~20x faster than formatting rows in Python, which
    matters for the embedding cache (384 floats a row)."""
    import pyarrow.csv as pacsv

    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            column = _array_literals(column)
        columns.append(column)
    converted = pa.Table.from_arrays(columns, names=table.column_names)
    buffer = io.BytesIO()
    pacsv.write_csv(
        converted,
        buffer,
        pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
    )
    buffer.seek(0)
    return buffer


# --- Results → Arrow ---------------------------------------------------------------------------


_FLOAT_ARRAYS = {1021: pa.float32(), 1022: pa.float64()}


def _parse_float_arrays(values: list[Any], value_type: pa.DataType) -> pa.Array:
    """``{0.1,2.5}`` texts (see :func:`open_postgres`) → a list<float> array, in Arrow's C++:
    psycopg2's own array parser builds a Python float per element, ~5x slower for vectors."""
    import pyarrow.compute as pc

    texts = pa.array(values, pa.string())
    inner = pc.utf8_slice_codeunits(texts, 1, -1)
    if pc.any(pc.equal(inner, "")).as_py() or pc.any(pc.match_substring(inner, "NULL")).as_py():
        parsed = [
            None
            if v is None
            else [None if e == "NULL" else float(e) for e in v[1:-1].split(",") if e]
            for v in values
        ]
        return pa.array(parsed, pa.list_(value_type))
    return pc.cast(pc.split_pattern(inner, ","), pa.list_(value_type))


def _column_array(values: list[Any], type_code: int) -> pa.Array:
    if type_code in _FLOAT_ARRAYS:
        return _parse_float_arrays(values, _FLOAT_ARRAYS[type_code])
    arrow_type = _ARROW_BY_OID.get(type_code)
    if arrow_type is None:
        return pa.array(values)
    if pa.types.is_binary(arrow_type):
        values = [bytes(v) if v is not None else None for v in values]
    return pa.array(values, type=arrow_type)


def _rows_to_arrow(description: Sequence[Any], rows: list[tuple[Any, ...]]) -> pa.Table:
    names = [d.name for d in description]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = [
        _column_array(list(values), d.type_code)
        for values, d in zip(columns, description, strict=True)
    ]
    return pa.Table.from_arrays(arrays, names=_unique(names))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        out.append(name if count == 0 else f"{name}_{count}")
        seen[name] = count + 1
    return out


_CREATE_IF_NOT_EXISTS = re.compile(
    r"\s*CREATE\s+(?:SCHEMA|TABLE|(?:UNIQUE\s+)?INDEX)\s+IF\s+NOT\s+EXISTS\b", re.IGNORECASE
)
_DDL_LOCK = "llmops:create-if-not-exists"


class PostgresWarehouse(Warehouse):
    """A psycopg2 connection (autocommit; :meth:`transaction` groups statements)."""

    kind = "postgres"

    def __init__(self, connection: Any, url: str) -> None:
        self.connection = connection
        self.url = url
        self._in_transaction = False

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def _cursor(self, sql: str, params: Sequence[Any] | None) -> Any:
        cursor = self.connection.cursor()
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(to_pyformat(sql), tuple(params))
        return cursor

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        if _CREATE_IF_NOT_EXISTS.match(sql):
            # "IF NOT EXISTS" is not atomic in PostgreSQL: two sessions creating one schema or
            # table at once both pass the check and one fails on a catalog unique index
            # (pg_namespace, pg_type). Creations take one transaction-scoped lock in turn.
            with self.transaction():
                self._cursor("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [_DDL_LOCK])
                return self._cursor(sql, params)
        return self._cursor(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        from psycopg2.extras import execute_batch

        with self.connection.cursor() as cursor:
            execute_batch(cursor, to_pyformat(sql), [tuple(r) for r in rows], page_size=500)

    def update(self, sql: str, params: Sequence[Any] | None = None) -> int:
        cursor = self._cursor(sql, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._cursor(sql, params)
        try:
            return [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()

    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        cursor = self._cursor(sql, params)
        try:
            return _rows_to_arrow(cursor.description, cursor.fetchall())
        finally:
            cursor.close()

    def iter_arrow(
        self, sql: str, params: Sequence[Any] | None = None, *, batch_rows: int = 1000
    ) -> Iterator[pa.RecordBatch]:
        cursor = self._cursor(sql, params)
        try:
            while True:
                rows = cursor.fetchmany(batch_rows)
                if not rows:
                    return
                yield from _rows_to_arrow(cursor.description, rows).to_batches()
        finally:
            cursor.close()

    @contextmanager
    def temp_table(self, name: str, table: pa.Table) -> Iterator[str]:
        columns = ", ".join(f'"{field.name}" {_pg_type(field.type)}' for field in table.schema)
        with self.connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
            cursor.execute(f"CREATE TEMP TABLE {name} ({columns})")
            if table.num_rows:
                names = ", ".join(f'"{n}"' for n in table.column_names)
                cursor.copy_expert(
                    f"COPY {name} ({names}) FROM STDIN WITH (FORMAT csv)", arrow_to_csv(table)
                )
        try:
            yield name
        finally:
            # In a failed transaction (status 3) the ROLLBACK that follows drops it anyway.
            if not self.connection.closed and self.connection.get_transaction_status() != 3:
                with self.connection.cursor() as cursor:
                    cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_transaction:
            yield
            return
        with self.connection.cursor() as cursor:
            cursor.execute("BEGIN")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            with self.connection.cursor() as cursor:
                cursor.execute("ROLLBACK")
            raise
        else:
            with self.connection.cursor() as cursor:
                cursor.execute("COMMIT")
        finally:
            self._in_transaction = False

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        # A session-level advisory lock: it spans statements and transactions (the body may
        # run on other connections entirely, as dlt's loader does) and dies with the session.
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        try:
            yield
        finally:
            if not self.connection.closed:
                with self.connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    def close(self) -> None:
        self.connection.close()


def open_postgres(url: str, *, connect_timeout_s: int = 10) -> PostgresWarehouse:
    """Connect to ``url``; an unreachable server is a :class:`WarehouseError` naming the
    setting and the (password-free) URL."""
    import psycopg2
    import psycopg2.extras

    try:
        connection = psycopg2.connect(libpq_url(url), connect_timeout=connect_timeout_s)
    except psycopg2.Error as exc:
        raise WarehouseError(
            f"cannot connect to the PostgreSQL warehouse {redact_url(url)} ({URL_SETTING}): "
            f"{str(exc).strip()}"
        ) from exc
    connection.autocommit = True
    # JSON columns (dlt's complex types) stay text, as DuckDB hands them over.
    psycopg2.extras.register_default_json(connection, loads=lambda text: text)
    psycopg2.extras.register_default_jsonb(connection, loads=lambda text: text)
    # float4[]/float8[] (vectors) stay text here and are parsed column-wise into Arrow.
    raw_floats = psycopg2.extensions.new_type(
        tuple(_FLOAT_ARRAYS), "LLMOPS_FLOAT_ARRAY_TEXT", lambda value, _cursor: value
    )
    psycopg2.extensions.register_type(raw_floats, connection)
    return PostgresWarehouse(connection, url)


@contextmanager
def connect_postgres(url: str, *, read_only: bool = False) -> Iterator[PostgresWarehouse]:
    warehouse = open_postgres(url)
    try:
        if not read_only:
            warehouse.ensure_schema(PIPELINE_SCHEMA)
        yield warehouse
    finally:
        warehouse.close()
