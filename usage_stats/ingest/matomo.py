"""Matomo's log tables → the lake, one site and day at a time.

`log_link_visit_action` joined to `log_action` becomes `events` (adding `action_type`,
`action_url`, `action_url_prefix`), `log_visit` becomes `visits`, in the archive layout
`<table>/idsite=<N>/year=<Y>/month=<M>/day=<D>/part-0.parquet`.

A visit belongs to the day of its first action and keeps *all* its actions, including those
after midnight, so no visit is split between two days' files. Rows are streamed from the
database in bounded chunks into a local Parquet file (memory does not grow with the day);
only when both tables of a site-day are complete is the leaf in the lake replaced, so a
failure (database unreachable, a table missing) leaves the lake as it was.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchTableError, OperationalError, ProgrammingError

from usage_stats.storage.lake import Lake, day_leaf

_CUSTOM_VAR = re.compile(r"^custom_var_[kv]\d+$")
DEFAULT_PREFIX = "matomo_"


class MatomoExportError(RuntimeError):
    """The Matomo database cannot be read; the message names the database and the table."""


@dataclass(frozen=True)
class ExportResult:
    site_id: int
    day: dt.date
    events: int
    visits: int
    keys: tuple[str, ...]


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def matomo_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600)


@dataclass
class MatomoTables:
    """The three log tables of one Matomo database, reflected once per export run."""

    engine: Engine
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        self._tables: dict[str, Table] = {}

    def table(self, name: str) -> Table:
        full = f"{self.prefix}{name}"
        if full not in self._tables:
            try:
                self._tables[full] = Table(full, MetaData(), autoload_with=self.engine)
            except NoSuchTableError as exc:
                raise MatomoExportError(
                    f"Matomo database {_safe_url(self.engine)}: table {full} does not exist"
                ) from exc
            except OperationalError as exc:
                raise MatomoExportError(
                    f"Matomo database {_safe_url(self.engine)} is unreachable while reading "
                    f"table {full}: {exc.orig}"
                ) from exc
        return self._tables[full]


def _visit_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1)


def _events_query(tables: MatomoTables, site_id: int, day: dt.date):
    actions = tables.table("log_link_visit_action")
    visits = tables.table("log_visit")
    log_action = tables.table("log_action")
    start, end = _visit_window(day)
    custom = [c for c in actions.columns if _CUSTOM_VAR.match(c.name)]
    wanted = ("idlink_va", "idsite", "idvisitor", "idvisit", "server_time", "idaction_url",
              "idaction_name", "time_spent", "pageview_position")  # fmt: skip
    columns = [actions.c[name] for name in wanted if name in actions.c]
    first_visits = (
        select(visits.c.idvisit)
        .where(visits.c.idsite == site_id)
        .where(visits.c.visit_first_action_time >= start)
        .where(visits.c.visit_first_action_time < end)
    )
    joined = actions.outerjoin(log_action, log_action.c.idaction == actions.c.idaction_url)
    title: list = []
    if "idaction_name" in actions.c:
        # The page title (a log_action of type 4): the item's title in the dashboard.
        names = log_action.alias("name_action")
        joined = joined.outerjoin(names, names.c.idaction == actions.c.idaction_name)
        title = [names.c.name.label("action_name")]
    return (
        select(
            *columns,
            log_action.c.type.label("action_type"),
            log_action.c.name.label("action_url"),
            log_action.c.url_prefix.label("action_url_prefix"),
            *title,
            *custom,
        )
        .select_from(joined)
        .where(actions.c.idsite == site_id)
        .where(actions.c.idvisit.in_(first_visits))
        .order_by(actions.c.idvisit, actions.c.server_time, actions.c.idlink_va)
    )


def _visits_query(tables: MatomoTables, site_id: int, day: dt.date):
    visits = tables.table("log_visit")
    start, end = _visit_window(day)
    return (
        select(visits)
        .where(visits.c.idsite == site_id)
        .where(visits.c.visit_first_action_time >= start)
        .where(visits.c.visit_first_action_time < end)
        .order_by(visits.c.idvisit)
    )


def _arrow_type(column) -> pa.DataType:  # noqa: ANN001
    """Parquet types for Matomo's MySQL types (binary ids stay binary, times are UTC)."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return pa.string()
    if python_type is bool:
        return pa.bool_()
    if python_type is int:
        return pa.int64()
    if python_type is float:
        return pa.float64()
    if python_type is bytes:
        return pa.binary()
    if python_type is dt.datetime:
        return pa.timestamp("us")
    if python_type is dt.date:
        return pa.date32()
    if python_type.__name__ == "Decimal":
        return pa.float64()
    return pa.string()


def _stream_to_parquet(engine: Engine, query, path: Path, chunk_rows: int, what: str) -> int:  # noqa: ANN001
    """Rows of `query` into a Parquet file, `chunk_rows` at a time (one row group each)."""
    rows = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    try:
        with engine.connect().execution_options(stream_results=True, yield_per=chunk_rows) as conn:
            result = conn.execute(query)
            names = list(result.keys())
            types = {c.name: _arrow_type(c) for c in query.selected_columns}
            schema = pa.schema([(n, types.get(n, pa.string())) for n in names])
            # Only DECIMAL columns (coordinates) need a Python-side conversion; every other
            # column goes to Arrow as the driver returned it.
            decimal = {i for i, c in enumerate(query.selected_columns) if _is_decimal(c)}
            for chunk in _chunks(result, chunk_rows):
                columns = list(zip(*chunk, strict=True))
                arrays = [
                    pa.array(
                        [_plain(v) for v in values] if i in decimal else values,
                        type=schema.field(i).type,
                    )
                    for i, values in enumerate(columns)
                ]
                batch = pa.Table.from_arrays(arrays, schema=schema)
                if writer is None:
                    writer = pq.ParquetWriter(path, schema, compression="zstd")
                writer.write_table(batch)
                rows += len(chunk)
    except (OperationalError, ProgrammingError) as exc:
        raise MatomoExportError(
            f"Matomo database {_safe_url(engine)}: reading {what} failed: {exc.orig}"
        ) from exc
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no rows: still an (empty) file, so the leaf says "exported, nothing"
        pq.write_table(pa.Table.from_batches([], schema=schema), path, compression="zstd")
    return rows


def _is_decimal(column) -> bool:  # noqa: ANN001
    try:
        return column.type.python_type.__name__ == "Decimal"
    except NotImplementedError:
        return False


def _plain(value: object) -> object:
    if isinstance(value, memoryview):
        return value.tobytes()
    if type(value).__name__ == "Decimal":
        return float(value)  # type: ignore[arg-type]
    return value


def _chunks(result, size: int) -> Iterator[list]:  # noqa: ANN001
    while True:
        chunk = result.fetchmany(size)
        if not chunk:
            return
        yield chunk


def export_day(
    tables: MatomoTables,
    lake: Lake,
    site_ids: list[int],
    day: dt.date,
    chunk_rows: int = 50_000,
    progress: Callable[[ExportResult], None] | None = None,
) -> list[ExportResult]:
    """Export one day of several sites.

    Every site-day is read into local files first; only when all of them are complete are the
    lake's leaves replaced, so a failure part-way (a table missing, the server gone) leaves
    the lake exactly as it was.
    """
    results: list[ExportResult] = []
    with tempfile.TemporaryDirectory(prefix="matomo-export-") as tmp:
        staged: list[tuple[str, Path]] = []
        for site_id in site_ids:
            paths = {t: Path(tmp) / f"{site_id}-{t}.parquet" for t in ("events", "visits")}
            events = _stream_to_parquet(
                tables.engine,
                _events_query(tables, site_id, day),
                paths["events"],
                chunk_rows,
                f"table {tables.prefix}log_link_visit_action",
            )
            visits = _stream_to_parquet(
                tables.engine,
                _visits_query(tables, site_id, day),
                paths["visits"],
                chunk_rows,
                f"table {tables.prefix}log_visit",
            )
            keys = tuple(f"{day_leaf(t, site_id, day)}/part-0.parquet" for t in paths)
            staged += [(day_leaf(t, site_id, day), path) for t, path in paths.items()]
            result = ExportResult(site_id, day, events, visits, keys)
            results.append(result)
            if progress is not None:
                progress(result)
        for prefix, path in staged:
            lake.delete_prefix(prefix)
            lake.upload_file(f"{prefix}/part-0.parquet", path)
    return results


def export_site_day(
    tables: MatomoTables, lake: Lake, site_id: int, day: dt.date, chunk_rows: int = 50_000
) -> ExportResult:
    return export_day(tables, lake, [site_id], day, chunk_rows)[0]


def database_name(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def check_reachable(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        raise MatomoExportError(
            f"Matomo database {_safe_url(engine)} is unreachable: {exc.orig}"
        ) from exc


def table_names(engine: Engine) -> list[str]:
    return inspect(engine).get_table_names()
