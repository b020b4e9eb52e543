"""Create or update the Daily Sales automations on the Prefect API (idempotent)::

    python -m deployments.automations --webhook-url https://hooks.example.com/etl --deadline 06:00

Four automations, each calling the webhook block (a stock ``prefect.blocks.webhook.Webhook``)
with a JSON body that names the day (the event's resource, ``sales.day.<YYYY-MM-DD>``, or the
day's warehouse asset key):

- *day not loaded by HH:MM UTC*: a proactive trigger. A run of a recent day emits
  ``sales.day.due`` dated at the day's close (midnight UTC after it); the automation expects
  ``sales.day.loaded`` of the same day (``for_each`` resource) within HH:MM after that, and
  fires when it does not come. A day that is late but loads before the deadline does not fire.
- *quality degraded*: reactive, on ``sales.day.quality-degraded``.
- *run failed*: reactive, on ``sales.day.failed`` (the flow emits it on any failure of a day).
- *warehouse asset not fresh*: proactive, on the day's warehouse asset (``for_each`` asset key).
  A run with something to load emits ``sales.asset.due`` for it, dated at the run's scheduled
  start; the automation expects ``prefect.asset.materialization.succeeded`` of the same asset
  within ``--freshness`` (HH:MM[:SS], default 01:00) and fires when it does not come: the
  open-source server's stand-in for Prefect Cloud's asset freshness SLAs.

Automations are found by name: running the script again updates them in place.

The proactive ones need a server that keeps an expired window for a while: a run that starts
late emits its due event dated in the past, and Prefect opens a window that has already closed.
The server sweeps such windows once they are ``PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER``
(default 60 s) old, every 5 s: before the run's materialization or the next proactive pass
can fire it, so the late run never alerts. ``make server`` sets it to a day
(:data:`LATE_START_BUFFER`); on another server the script warns when it is shorter.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import cast
from uuid import UUID

import httpx
from prefect.automations import (
    Automation,
    AutomationCore,
    CallWebhook,
    EventTrigger,
    Posture,
)
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from pydantic import SecretStr, TypeAdapter

from deployments.api import unreachable_api_in_one_line
from tasks.assets import ASSET_DUE, MATERIALIZATION_SUCCEEDED
from tasks.operations import DAY_DEGRADED, DAY_DUE, DAY_FAILED, DAY_LOADED

DEFAULT_WEBHOOK_BLOCK = "daily-sales-alerts"
DEFAULT_DEADLINE = "06:00"
DEFAULT_FRESHNESS = "01:00"
TAGS = ["daily-sales"]
NOT_LOADED = "Daily Sales: day not loaded by the deadline"
DEGRADED = "Daily Sales: quality degraded"
FAILED = "Daily Sales: run failed"
NOT_FRESH = "Daily Sales: warehouse asset not fresh"
DAY_RESOURCES = {"prefect.resource.id": "sales.day.*"}
# The warehouse assets (sales_etl.assets.warehouse_asset_key); only a due event opens a window.
WAREHOUSE_ASSETS = {"prefect.resource.id": "postgresql://*"}
# How long the server keeps an expired window (this setting, as `make server` sets it): a run
# that starts up to this long after its window closed still alerts.
BUCKET_BUFFER_SETTING = "PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER"
LATE_START_BUFFER = timedelta(days=1)


def late_start_server_env() -> dict[str, str]:
    """The server setting that keeps expired windows :data:`LATE_START_BUFFER` (ISO 8601)."""
    buffer = TypeAdapter(timedelta).dump_python(LATE_START_BUFFER, mode="json")
    return {BUCKET_BUFFER_SETTING: buffer}


def parse_deadline(text: str) -> timedelta:
    """``HH:MM`` (or ``HH:MM:SS``) UTC after the day closes, as a duration from midnight."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a time of day (HH:MM): {text!r}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    if hours > 23 or minutes > 59 or seconds > 59:
        raise argparse.ArgumentTypeError(f"not a time of day (HH:MM): {text!r}")
    deadline = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if deadline < timedelta(seconds=10):  # Prefect's minimum window of a proactive trigger
        raise argparse.ArgumentTypeError("the deadline must be at least 00:00:10")
    return deadline


def _payload(kind: str, detail: str) -> str:
    """The webhook body, a Jinja template over the triggering event."""
    return (
        "{"
        f'"alert": "{kind}", '
        '"automation": "{{ automation.name }}", '
        '"resource": "{{ event.resource.id }}", '
        '"event": "{{ event.event }}", '
        f'"detail": {detail}'
        "}"
    )


def _hhmm(duration: timedelta) -> str:
    hours, rest = divmod(int(duration.total_seconds()), 3600)
    return f"{hours:02d}:{rest // 60:02d}" + (f":{rest % 60:02d}" if rest % 60 else "")


def daily_sales_automations(
    webhook_block_id: UUID,
    deadline: timedelta,
    freshness: timedelta = timedelta(hours=1),
) -> list[AutomationCore]:
    """The four automations, each notifying through the webhook block ``webhook_block_id``:
    a day must be loaded ``deadline`` after it closes, and a run's warehouse asset be
    materialized ``freshness`` after the run's scheduled start."""
    hhmm = _hhmm(deadline)
    not_loaded = _expected_after(DAY_DUE, DAY_LOADED, DAY_RESOURCES, deadline)
    degraded = _on_each(DAY_DEGRADED)
    failed = _on_each(DAY_FAILED)
    not_fresh = _expected_after(ASSET_DUE, MATERIALIZATION_SUCCEEDED, WAREHOUSE_ASSETS, freshness)

    def webhook(kind: str, detail: str) -> CallWebhook:
        return CallWebhook(block_document_id=webhook_block_id, payload=_payload(kind, detail))

    return [
        AutomationCore(
            name=NOT_LOADED,
            description=f"A day is not loaded by {hhmm} UTC after it closes (sales.day.loaded "
            "missing after sales.day.due).",
            tags=TAGS,
            trigger=not_loaded,
            actions=[webhook("not-loaded", f'"not loaded by {hhmm} UTC"')],
        ),
        AutomationCore(
            name=DEGRADED,
            description="A day's reject rate is above the quality thresholds.",
            tags=TAGS,
            trigger=degraded,
            actions=[webhook("quality-degraded", "{{ event.payload | tojson }}")],
        ),
        AutomationCore(
            name=FAILED,
            description="A run of the Daily Sales ETL failed for a day.",
            tags=TAGS,
            trigger=failed,
            actions=[webhook("run-failed", "{{ event.payload | tojson }}")],
        ),
        AutomationCore(
            name=NOT_FRESH,
            description=f"A day's warehouse asset is not materialized {_hhmm(freshness)} after "
            f"its run's scheduled start ({MATERIALIZATION_SUCCEEDED} missing after {ASSET_DUE}).",
            tags=TAGS,
            trigger=not_fresh,
            actions=[webhook("asset-not-fresh", f'"not materialized within {_hhmm(freshness)}"')],
        ),
    ]


def _expected_after(
    after: str, expect: str, match: dict[str, str], within: timedelta
) -> EventTrigger:
    """Fires for a resource when ``expect`` does not follow ``after`` within ``within``."""
    return EventTrigger(
        after={after},
        expect={expect},
        match=match,  # type: ignore[arg-type]  # coerced by the model's validator
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=within,
    )


def _on_each(event: str) -> EventTrigger:
    """Fires on each ``event`` of a day."""
    return EventTrigger(
        expect={event},
        match=DAY_RESOURCES,  # type: ignore[arg-type]
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=1,
    )


def apply(automation: AutomationCore) -> tuple[str, UUID]:
    """Create ``automation``, or update the one of the same name; returns (verb, id)."""
    try:
        existing = cast(Automation, Automation.read(name=automation.name))
    except ValueError:  # "not found"
        created = cast(Automation, Automation(**automation.model_dump()).create())
        assert created.id is not None
        return "created", created.id
    assert existing.id is not None
    Automation(**automation.model_dump(), id=existing.id).update()
    return "updated", existing.id


def webhook_block_id(name: str, url: str | None) -> UUID:
    """The id of webhook block ``name``: saved (overwritten) from ``url`` when given."""
    if url:
        Webhook(method="POST", url=SecretStr(url)).save(name, overwrite=True)
    block = Webhook.load(name)
    assert isinstance(block, Webhook)
    assert block._block_document_id is not None
    return block._block_document_id


def server_bucket_buffer() -> timedelta | None:
    """The server's :data:`BUCKET_BUFFER_SETTING`; None where the API does not tell its
    settings (Prefect Cloud)."""
    with get_client(sync_client=True) as client:
        try:
            response = client.request("GET", "/admin/settings")
        except httpx.HTTPStatusError:
            return None
    buffer = response.json().get("server", {}).get("events", {}).get("expired_bucket_buffer")
    return None if buffer is None else TypeAdapter(timedelta).validate_python(buffer)


def late_start_warning(buffer: timedelta | None) -> str | None:
    """What to tell the user when the server sweeps expired windows too soon for late runs."""
    if buffer is None or buffer >= LATE_START_BUFFER:
        return None
    return (
        f"warning: the server keeps an expired window {buffer.total_seconds():.0f} s "
        f"({BUCKET_BUFFER_SETTING}): a run that starts more than that past its freshness or "
        f"deadline window will not alert. Start the server with {BUCKET_BUFFER_SETTING}="
        f"{late_start_server_env()[BUCKET_BUFFER_SETTING]} (as `make server` does)."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.automations",
        description=(
            "Create or update the Daily Sales automations on the Prefect API (PREFECT_API_URL): "
            "'day not loaded by HH:MM UTC', 'quality degraded', 'run failed' and 'warehouse "
            "asset not fresh', each calling a webhook block. Idempotent: automations are "
            "matched by name."
        ),
    )
    parser.add_argument(
        "--webhook-url",
        default=None,
        help="save the webhook block with this URL (overwriting it); without it the block "
        "must exist (create it in the UI: Blocks -> Webhook)",
    )
    parser.add_argument(
        "--webhook-block",
        default=DEFAULT_WEBHOOK_BLOCK,
        help=f"name of the Webhook block (default: {DEFAULT_WEBHOOK_BLOCK})",
    )
    parser.add_argument(
        "--deadline",
        type=parse_deadline,
        default=parse_deadline(DEFAULT_DEADLINE),
        metavar="HH:MM",
        help=f"a day must be loaded by this UTC time after it ends (default: {DEFAULT_DEADLINE})",
    )
    parser.add_argument(
        "--freshness",
        type=parse_deadline,
        default=parse_deadline(DEFAULT_FRESHNESS),
        metavar="HH:MM",
        help="a run's warehouse asset must be materialized this long after the run's scheduled "
        f"start (default: {DEFAULT_FRESHNESS})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with unreachable_api_in_one_line():
        block_id = webhook_block_id(args.webhook_block, args.webhook_url)
        for automation in daily_sales_automations(block_id, args.deadline, args.freshness):
            verb, automation_id = apply(automation)
            print(f"{verb} automation {automation.name!r}: {automation_id}")
        buffer = server_bucket_buffer()
    warning = late_start_warning(buffer)
    if warning:
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
