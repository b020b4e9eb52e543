"""The load counters, defined once.

What one load of a day did to the warehouse is :class:`LoadCounts`. Everything that reports a
load derives from it and names no counter itself:

- the load ledger's columns (:meth:`LoadCounts.ledger_columns`, ``sales_etl/warehouse.py``) and
  the rows written to and read back from it (:meth:`as_row`, :meth:`from_row`);
- the run summary (``sales_etl/report.py``: ``RunSummary.load``) and the flow's result;
- the ``sales.day.loaded`` event's payload (:meth:`as_payload`, ``tasks/operations.py``);
- the backfill's table of days (``flows/backfill.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Numeric
from sqlalchemy.types import TypeEngine


@dataclass(frozen=True)
class LoadCounts:
    """What one load did to a day, as the ledger keeps it."""

    staged: int = 0  # valid records staged
    staged_rejected: int = 0  # rejected records staged
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0  # versions older than the stored one
    voided: int = 0  # sales removed by a void
    quarantined: int = 0  # malformed updates of stored sales, kept as rejects
    superseded: int = 0  # older duplicates of a sale within the load
    rejects_kept: int = 0  # the day's rows in the rejects table after the load
    day_sales: int = 0  # the day's sales in the warehouse after the load
    # Unconstrained numeric: a day's total must hold any sum of the contract's numeric(18,4)
    # amounts (3,000 sales near its maximum already outgrow numeric(20,4)).
    day_amount: Decimal = Decimal(0)
    high_water_mark: datetime | None = None  # the newest updated_at loaded for the day so far

    @property
    def records(self) -> int:
        """Every record staged, valid or not."""
        return self.staged + self.staged_rejected

    @staticmethod
    def names() -> tuple[str, ...]:
        """The counters' names (a subclass's own fields are not counters)."""
        return tuple(f.name for f in fields(LoadCounts))

    @staticmethod
    def ledger_columns() -> list[Column[Any]]:
        """The ledger's column of each counter (nullable: a failed load has none)."""
        return [Column(f.name, _sql_type(str(f.type))) for f in fields(LoadCounts)]

    def as_row(self) -> dict[str, Any]:
        """The counters as the ledger's column values."""
        return {name: getattr(self, name) for name in self.names()}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LoadCounts:
        """The counters of a ledger row (or of :meth:`as_payload`'s output)."""
        values: dict[str, Any] = {name: row[name] for name in cls.names() if name in row}
        if values.get("day_amount") is not None:
            values["day_amount"] = Decimal(str(values["day_amount"]))
        mark = values.get("high_water_mark")
        if isinstance(mark, str):
            values["high_water_mark"] = datetime.fromisoformat(mark)
        return cls(**{k: v for k, v in values.items() if v is not None})

    def as_payload(self) -> dict[str, Any]:
        """The counters as JSON values: the amount as exact decimal text, times as ISO 8601."""
        payload = self.as_row()
        payload["day_amount"] = str(self.day_amount)
        mark = self.high_water_mark
        payload["high_water_mark"] = mark.isoformat() if mark is not None else None
        return payload


def _sql_type(annotation: str) -> TypeEngine[Any]:
    """The ledger's SQL type of a counter's annotation (a string: postponed annotations)."""
    if annotation == "int":
        return BigInteger()
    if annotation == "Decimal":
        return Numeric()
    if annotation == "datetime | None":
        return DateTime(timezone=True)
    raise TypeError(f"no ledger type for a counter annotated {annotation!r}")
