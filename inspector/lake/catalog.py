"""The Iceberg catalog: opening our tables, reading the offsets a table holds, and the
conditional commit that makes the sink exactly-once.

Each commit (an Iceberg snapshot) carries in its summary the Kafka next-offset of
every partition of the table's topic: everything below those offsets is in the table,
nothing at or above is. A commit is a compare-and-set per partition: it lands only if,
for each partition it covers, the table still holds the offset the batch started
from, and the SQL catalog swaps the metadata pointer atomically (pyiceberg's own
silent re-apply on conflict is turned off: ``commit.retry.num-retries = 0``, since a
re-applied append would carry stale offsets). A loser re-reads the table's offsets,
drops what another committer already wrote, and tries again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.exceptions import ValidationError as MetadataInvalid
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import FileScanTask, Table
from pyiceberg.types import IcebergType

from inspector.config import LakeSettings, redact_uri
from inspector.lake.tables import OFFSETS_PROPERTY, OWNER_PROPERTY, TableSpec

log = logging.getLogger(__name__)

EVOLVED_DOC = "added by schema evolution: a newer producer's optional field"
# Snapshot summary property of a compaction: how many files it rewrote.
COMPACTED_PROPERTY = "inspector.compacted-files"
REWRITE_BYTES_FACTOR = 4  # one rewrite reads at most 4 × compact_small_bytes
NO_RETRY = {"commit.retry.num-retries": "0"}
# Every commit writes a new metadata file; keep the last 100, delete older ones.
METADATA_FILES = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}


class LakeError(Exception):
    """A table we must not write (foreign, corrupt, incompatible); one clear line."""


class CatalogUnavailable(Exception):
    """The catalog or the warehouse cannot be reached now; retry later."""


Offsets = dict[int, int]  # partition -> next offset


def open_catalog(settings: LakeSettings) -> Catalog:
    """The SQL catalog (SQLite, or PostgreSQL through psycopg 3 with ``postgresql://``)
    whose FileIO reaches the warehouse (local disk, or S3 with ``lake.s3``)."""
    uri = settings.resolved_catalog_uri()
    warehouse = settings.resolved_warehouse()
    if uri.startswith("sqlite:///") and not settings.catalog_uri:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    props = settings.s3.fileio_properties() if settings.s3 else {}
    if not uri.startswith("sqlite"):
        # a pooled connection to a database server that restarted is dead: test it
        # before use, so the first commit after an outage does not fail on it
        props["pool_pre_ping"] = "true"
    try:
        return SqlCatalog(settings.catalog_name, uri=uri, warehouse=warehouse, **props)
    except Exception as exc:
        shown = redact_uri(uri)
        detail = (str(exc).replace(uri, shown).splitlines() or [""])[0]  # one line
        raise CatalogUnavailable(f"catalog {shown}: {type(exc).__name__}: {detail}") from exc


def offsets_of(table: Table, topic: str) -> Offsets:
    """The offsets of ``topic`` the table holds: from the newest snapshot that has them
    (a maintenance snapshot, e.g. compaction, carries none; its ancestors do)."""
    snap = table.current_snapshot()
    while snap is not None:
        summary = snap.summary
        raw = summary.additional_properties.get(OFFSETS_PROPERTY) if summary else None
        if raw is not None:
            data = orjson.loads(raw)
            return {int(p): int(o) for p, o in data.get(topic, {}).items()}
        parent = snap.parent_snapshot_id
        snap = table.metadata.snapshot_by_id(parent) if parent is not None else None
    if table.current_snapshot() is not None:
        # Snapshots, but none left that holds offsets (another engine's commits on top,
        # ours expired): starting over from nothing would duplicate the whole table.
        raise LakeError(
            f"table {'.'.join(table.name())} has snapshots but none that holds Kafka "
            f"offsets ({OFFSETS_PROPERTY}); refusing to guess where to resume"
        )
    return {}


def _check_ours(table: Table, spec: TableSpec, ident: str) -> None:
    owner = table.properties.get(OWNER_PROPERTY)
    if owner != spec.name:
        raise LakeError(
            f"table {ident} exists but was not created by inspector's sink "
            f"({OWNER_PROPERTY}={owner!r}); refusing to write to it — choose another "
            "lake.namespace or move that table"
        )
    schema = table.schema()
    for f in spec.schema.fields:
        try:
            have = schema.find_field(f.name)
        except ValueError:
            raise LakeError(f"table {ident} has no column {f.name!r}; refusing to write") from None
        if str(have.field_type) != str(f.field_type):
            raise LakeError(
                f"table {ident} column {f.name!r} is {have.field_type}, expected "
                f"{f.field_type}; refusing to write"
            )


def _corrupt(ident: str, exc: BaseException) -> LakeError:
    detail = (str(exc).splitlines() or [""])[0][:300]
    return LakeError(
        f"table {ident}: its metadata cannot be read ({type(exc).__name__}: {detail}); "
        "refusing to write to it — restore it or choose another lake.namespace"
    )


def open_table(catalog: Catalog, namespace: str, spec: TableSpec) -> Table:
    ident = f"{namespace}.{spec.name}"
    try:
        catalog.create_namespace_if_not_exists(namespace)
        try:
            table = catalog.load_table(ident)
        except NoSuchTableError:
            table = catalog.create_table_if_not_exists(
                ident,
                schema=spec.schema,
                partition_spec=spec.partition_spec(),
                properties={OWNER_PROPERTY: spec.name, **NO_RETRY, **METADATA_FILES},
            )
    except LakeError:
        raise
    except (ValueError, MetadataInvalid) as exc:  # metadata that does not parse: corrupt
        raise _corrupt(ident, exc) from exc
    except Exception as exc:
        raise CatalogUnavailable(f"opening {ident}: {type(exc).__name__}: {exc}") from exc
    _check_ours(table, spec, ident)
    return table


def _small_files(table: Table, min_files: int, small_bytes: int) -> list[FileScanTask]:
    """The small files of the partition that has the most (at least ``min_files``),
    at most ``REWRITE_BYTES_FACTOR × small_bytes`` of them in one rewrite."""
    if table.current_snapshot() is None:
        return []
    groups: dict[tuple[int, Any], list[FileScanTask]] = {}
    for task in table.scan().plan_files():
        f = task.file
        if f.file_size_in_bytes < small_bytes and not task.delete_files:
            groups.setdefault((f.spec_id, f.partition), []).append(task)  # Record: hashable
    best = max(groups.values(), key=len, default=[])
    if len(best) < min_files:
        return []
    picked: list[FileScanTask] = []
    total = 0
    for task in sorted(best, key=lambda t: t.file.file_size_in_bytes):
        if picked and total + task.file.file_size_in_bytes > REWRITE_BYTES_FACTOR * small_bytes:
            break
        picked.append(task)
        total += task.file.file_size_in_bytes
    return picked if len(picked) >= 2 else []


@dataclass
class CommitResult:
    committed: bool
    rows: int = 0
    conflicts: int = 0
    # partition -> the table's offset, where another committer got there first
    lost: Offsets = field(default_factory=dict)


class LakeTableWriter:
    """One table: reads its offsets and commits batches conditionally."""

    EVOLVE_ATTEMPTS = 10

    def __init__(self, catalog: Catalog, namespace: str, spec: TableSpec, topic: str) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self.spec = spec
        self.topic = topic
        self._table: Table | None = None

    @property
    def ident(self) -> str:
        return f"{self.namespace}.{self.spec.name}"

    def table(self) -> Table:
        if self._table is None:
            self._table = open_table(self.catalog, self.namespace, self.spec)
        else:
            try:
                self._table.refresh()
            except (ValueError, MetadataInvalid) as exc:
                raise _corrupt(self.ident, exc) from exc
            except Exception as exc:
                raise CatalogUnavailable(
                    f"reading {self.ident}: {type(exc).__name__}: {exc}"
                ) from exc
        return self._table

    def offsets(self) -> Offsets:
        return offsets_of(self.table(), self.topic)

    @property
    def own_columns(self) -> frozenset[str]:
        """The columns the table is created with; evolution never fills these."""
        return frozenset(f.name for f in self.spec.schema.fields)

    def columns(self) -> dict[str, IcebergType]:
        """The table's columns as last read (no catalog call: the spec's if never read)."""
        schema = self._table.schema() if self._table is not None else self.spec.schema
        return {f.name: f.field_type for f in schema.fields}

    def evolve(self, wanted: dict[str, IcebergType]) -> dict[str, IcebergType]:
        """Add the ``wanted`` columns the table lacks (nullable, documented as added by
        evolution) and return the table's columns after. A column another committer
        added meanwhile is kept with its type (the caller re-fits its rows). Raises
        CatalogUnavailable."""
        for _ in range(self.EVOLVE_ATTEMPTS):
            table = self.table()
            have = {f.name: f.field_type for f in table.schema().fields}
            missing = {n: t for n, t in wanted.items() if n not in have}
            if not missing:
                return have
            try:
                with table.update_schema() as update:
                    for name, kind in missing.items():
                        update.add_column(name, kind, doc=EVOLVED_DOC)
            except CommitFailedException:
                continue  # another committer moved the table: re-read, try again
            except Exception as exc:
                raise CatalogUnavailable(
                    f"adding columns {sorted(missing)} to {self.ident}: {type(exc).__name__}: {exc}"
                ) from exc
            log.info("columns added", extra={"table": self.ident, "columns": sorted(missing)})
        raise CatalogUnavailable(
            f"{self.ident}: adding columns lost {self.EVOLVE_ATTEMPTS} times to concurrent "
            "committers"
        )

    def commit(
        self, rows: list[dict[str, Any]], base: dict[int, int | None], ends: Offsets
    ) -> CommitResult:
        """Append ``rows`` and set ``ends`` if the table still holds ``base`` (None: no
        offset yet) for every partition in ``ends``; otherwise report the partitions
        another committer advanced (``lost``) and commit nothing."""
        table = self.table()
        current = offsets_of(table, self.topic)
        # -1: the table holds nothing for a partition we thought it did
        lost = {p: current.get(p, -1) for p in ends if current.get(p) != base.get(p)}
        if lost:
            return CommitResult(False, lost=lost)
        merged = {**current, **ends}
        props = {
            OFFSETS_PROPERTY: orjson.dumps(
                {self.topic: {str(p): o for p, o in sorted(merged.items())}}
            ).decode()
        }
        try:
            arrow = pa.Table.from_pylist(rows, schema=table.schema().as_arrow())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise LakeError(f"rows do not fit {self.ident}: {exc}") from exc
        try:
            table.append(arrow, snapshot_properties=props)
        except CommitFailedException:
            return CommitResult(False, conflicts=1)
        except Exception as exc:
            raise CatalogUnavailable(
                f"committing to {self.ident}: {type(exc).__name__}: {exc}"
            ) from exc
        return CommitResult(True, rows=len(rows))

    def compact(self, *, min_files: int, small_bytes: int, max_partitions: int) -> list[int]:
        """Rewrite the small data files of up to ``max_partitions`` partitions (those
        with at least ``min_files`` files under ``small_bytes``), each into as few files
        as its rows need; returns the number of files each rewrite replaced.

        One overwrite snapshot per partition, built on the snapshot the files were read
        from: if anyone commits in between, the catalog refuses it (the next round
        tries again) and nothing is lost or doubled. The snapshot carries the table's
        offsets unchanged, so where to resume never depends on older snapshots.
        Raises CatalogUnavailable."""
        done: list[int] = []
        for _ in range(max_partitions):
            table = self.table()
            group = _small_files(table, min_files, small_bytes)
            if not group:
                break
            try:
                replaced = self._rewrite(table, group)
            except CommitFailedException:
                break  # another committer moved the table: next round
            except (LakeError, CatalogUnavailable):
                raise
            except Exception as exc:
                raise CatalogUnavailable(
                    f"compacting {self.ident}: {type(exc).__name__}: {exc}"
                ) from exc
            done.append(replaced)
        return done

    def _rewrite(self, table: Table, group: list[FileScanTask]) -> int:
        from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

        arrow = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(group)
        offsets = offsets_of(table, self.topic)
        props = {
            OFFSETS_PROPERTY: orjson.dumps(
                {self.topic: {str(p): o for p, o in sorted(offsets.items())}}
            ).decode(),
            COMPACTED_PROPERTY: str(len(group)),
        }
        with table.transaction() as tx, tx.update_snapshot(props).overwrite() as rewrite:
            for task in group:
                rewrite.delete_data_file(task.file)
            for data_file in _dataframe_to_data_files(
                table_metadata=tx.table_metadata,
                write_uuid=rewrite.commit_uuid,
                df=arrow,
                io=table.io,
            ):
                rewrite.append_data_file(data_file)
        log.info(
            "small files compacted",
            extra={"table": self.ident, "files": len(group), "rows": arrow.num_rows},
        )
        return len(group)

    def expire(self, older_than_s: float) -> int:
        """Expire snapshots older than ``older_than_s`` seconds (never the current one,
        whose summary holds the offsets). Returns how many; 0 when another committer
        got in between (the next round retries)."""
        from datetime import UTC, datetime

        table = self.table()
        cutoff = datetime.fromtimestamp(time.time() - older_than_s, UTC)
        current = table.current_snapshot()
        old = [
            s.snapshot_id
            for s in table.metadata.snapshots
            if s.timestamp_ms < cutoff.timestamp() * 1000
            and (current is None or s.snapshot_id != current.snapshot_id)
        ]
        if not old:
            return 0
        try:
            table.maintenance.expire_snapshots().by_ids(old).commit()
        except CommitFailedException:
            return 0
        except Exception as exc:
            raise CatalogUnavailable(
                f"expiring snapshots of {self.ident}: {type(exc).__name__}: {exc}"
            ) from exc
        return len(old)
