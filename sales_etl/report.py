"""The run summary: one object, rendered as console text, markdown and a table artifact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sales_etl.counts import LoadCounts


@dataclass
class RunSummary:
    """What one run of a day did. Holds no secrets: URLs are masked on the way in."""

    day: str
    run_id: str
    status: str = "running"  # loaded | loaded_from_snapshot | skipped | failed
    message: str = ""
    source: str = ""
    lake: str = ""
    warehouse: str = ""
    snapshot_id: str | None = None
    extract_mode: str = "full"  # full: the whole day | incremental: since the high-water mark
    fallback_used: bool = False
    fallback_reason: str | None = None
    pages: int = 0
    records_extracted: int = 0
    clean: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    load: LoadCounts = field(default_factory=LoadCounts)  # what the load did (sales_etl.counts)
    load_skipped: bool = False
    clean_amount_total: str = "0"
    timings: dict[str, float] = field(default_factory=dict)
    load_steps: dict[str, float] = field(default_factory=dict)  # seconds per load statement
    look: str = ""  # how to look at the loaded data (the embedded warehouse), if anything to say
    schema_contract: str = "evolve"  # SCHEMA_CONTRACT: evolve | freeze | discard
    schema_change: str | None = None  # how the source's record shape changed, if it did

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON values, flat: the flow's result, readable in the UI and by
        :meth:`from_dict` (the load counters sit beside the run's own fields)."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "load"}
        return {**own, **self.load.as_payload(), "rejected": self.rejected}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """The summary back from :meth:`as_dict` (the CLI and the backfill read a run's result)."""
        own = {f.name: data[f.name] for f in fields(cls) if f.name != "load" and f.name in data}
        return cls(**own, load=LoadCounts.from_row(data))

    def brief(self) -> dict[str, int]:
        """The run's main counts, one column each (the backfill's table of days)."""
        load = self.load
        return {
            "records_extracted": self.records_extracted,
            "clean": self.clean,
            "rejected": self.rejected,
            "inserted": load.inserted,
            "updated": load.updated,
            "unchanged": load.unchanged,
            "rejects_kept": load.rejects_kept,
        }

    def table_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"metric": "status", "value": self.status},
            {"metric": "records extracted", "value": self.records_extracted},
            {"metric": "pages", "value": self.pages},
            {"metric": "valid", "value": self.clean},
            {"metric": "rejected", "value": self.rejected},
            {"metric": "superseded duplicates", "value": self.load.superseded},
            {"metric": "inserted", "value": self.load.inserted},
            {"metric": "updated", "value": self.load.updated},
            {"metric": "unchanged", "value": self.load.unchanged},
            {"metric": "stale (older than stored)", "value": self.load.stale},
            {"metric": "voided sales removed", "value": self.load.voided},
            {"metric": "malformed updates quarantined", "value": self.load.quarantined},
            {"metric": "rejects kept for the day", "value": self.load.rejects_kept},
            {"metric": "sales of the day in the warehouse", "value": self.load.day_sales},
            {"metric": "amount of the day in the warehouse", "value": str(self.load.day_amount)},
            {"metric": "load skipped (snapshot already loaded)", "value": self.load_skipped},
            {"metric": "amount of valid records", "value": self.clean_amount_total},
            {"metric": "fallback snapshot used", "value": self.fallback_used},
            {"metric": f"schema change ({self.schema_contract})", "value": self.schema_text()},
        ]
        rows += [
            {"metric": f"rejected: {k}", "value": v} for k, v in self.rejected_by_reason.items()
        ]
        rows += [{"metric": f"seconds: {k}", "value": round(v, 3)} for k, v in self.timings.items()]
        rows += [
            {"metric": f"seconds: load step {k}", "value": round(v, 3)}
            for k, v in self.load_steps.items()
        ]
        return rows

    def to_markdown(self) -> str:
        lines = [f"# Daily Sales ETL — {self.day}", "", f"**{self.status}**: {self.message}", ""]
        if self.fallback_used:
            lines += [
                f"> **Fallback:** the API failed ({self.fallback_reason}); the day was loaded "
                f"from raw snapshot `{self.snapshot_id}`.",
                "",
            ]
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {r['metric']} | {r['value']} |" for r in self.table_rows()[1:]]
        lines += ["", f"- source: `{self.source}`", f"- lake: `{self.lake}`"]
        lines += [f"- warehouse: `{self.warehouse}`", f"- run id: `{self.run_id}`"]
        lines += [f"- {self.look}"] if self.look else []
        return "\n".join(lines)

    def to_text(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in self.rejected_by_reason.items()) or "none"
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        lines = [
            self.headline(),
            f"  extracted {self.records_extracted} records in {self.pages} pages"
            + (" (FROM FALLBACK SNAPSHOT)" if self.fallback_used else ""),
            f"  valid {self.clean}, rejected {self.rejected} ({reasons}), "
            f"superseded duplicates {self.load.superseded}",
            f"  warehouse: {self.load_text()}, {self.load.stale} stale, "
            f"{self.load.quarantined} quarantined, {self.load.rejects_kept} rejects kept"
            + (" (snapshot already loaded: load skipped)" if self.load_skipped else ""),
            f"  schema ({self.schema_contract}): {self.schema_text()}",
            f"  timings: {timings}",
            f"  raw snapshot: {self.snapshot_id}",
            f"  lake: {self.lake}",
            f"  warehouse: {self.warehouse}",
        ]
        lines += [f"  {self.look}"] if self.look else []
        return "\n".join(lines)

    def headline(self) -> str:
        """The first line of :meth:`to_text`, the line the CLI prints: the verdict, then what
        this run did, then (for a load) the day as it now stands in the warehouse."""
        line = f"Daily Sales ETL {self.day}: {self.status.upper()} — {self.message}"
        if self.status in ("loaded", "loaded_from_snapshot"):
            line += f" | {self.warehouse_text()}"
        if self.schema_change:
            line += f" | SCHEMA CHANGED ({self.schema_contract}): {self.schema_change}"
        return line

    def schema_text(self) -> str:
        """The shape of the records against the contract: unchanged, or what changed."""
        return self.schema_change or "as the contract and the previous snapshot"

    def run_text(self) -> str:
        """What this run did, named as such: the records it extracted (the whole day or the
        increment since the high-water mark) and what their load changed."""
        scope = "increment" if self.extract_mode == "incremental" else "whole day"
        text = (
            f"this run ({scope}): {self.records_extracted} records, {self.clean} valid, "
            f"{self.rejected} rejected"
        )
        if self.load_skipped:
            return f"{text}; snapshot already loaded, nothing changed"
        return f"{text}; {self.load_text()}"

    def load_text(self) -> str:
        load = self.load
        return (
            f"{load.inserted} inserted, {load.updated} updated, {load.unchanged} unchanged, "
            f"{load.voided} voided"
        )

    def warehouse_text(self) -> str:
        """The day as it stands in the warehouse after the run (all runs of the day)."""
        return f"day in the warehouse: {self.load.day_sales} sales, amount {self.load.day_amount}"


def mask_url(url: str) -> str:
    """A URL with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
