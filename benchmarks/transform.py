"""Benchmark of the transform alone: a realistic raw day -> clean snapshot.

``python -m benchmarks.transform --help``. Writes a realistic day into a throwaway local lake
(about 10% rejects spread over every reason code, 5% duplicates of a sale arriving later with a
newer ``updated_at``, long ids, skewed stores and products, prices as JSON numbers and as
strings, a few pages with ``NaN`` literals that only the lossless parser reads), then transforms
it in fresh processes and prints records/s and peak RSS:

* ``sequential``: :func:`sales_etl.transform.transform_snapshot`, one process;
* ``parallel``: the per-part tasks of :func:`sales_etl.transform.transform_part` on a
  ``dask.distributed`` cluster with 1 and then 2 single-threaded worker processes.

The generator (:func:`write_realistic_day`) is also what the tests use for a day with every
reason code.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sales_etl.lake import Lake
from sales_etl.snapshots import RawSnapshotWriter, SnapshotRef
from sales_etl.source import Page

DAY = date(2026, 11, 23)
RESULT_PREFIX = "TRANSFORM_RESULT "

CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY", "SEK", "eur", "usd")
OFFSETS = ("Z", "+00:00", "+01:00", "-05:00", "+05:30", "-08:00", "+09:00", "+0100")

# (share of the rejects, how one record is broken); every reason code of REASON_ORDER appears.
BREAKAGES: tuple[str, ...] = (
    "not_an_object_list",
    "not_an_object_string",
    "missing_sale_id",
    "long_sale_id",
    "bad_sale_date",
    "sale_date_without_offset",
    "sale_date_other_day",
    "missing_updated_at",
    "missing_store_id",
    "control_char_store_id",
    "long_product_id",
    "numeric_customer_id",
    "quantity_string",
    "quantity_zero",
    "quantity_fraction",
    "negative_unit_price",
    "unit_price_five_decimals",
    "amount_with_text",
    "amount_exponent",
    "unknown_currency",
    "zero_amount",
    "negative_amount",
)


def _stamp(moment: datetime, offset: str, fraction: bool) -> str:
    if offset in ("Z",):
        local = moment
        suffix = "Z"
    else:
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        local = moment + sign * delta
        suffix = offset
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += f".{moment.microsecond:06d}"
    return text + suffix


def _record_text(
    day: date, rng: random.Random, number: int, version: int, breakage: str | None
) -> str:
    """One record as the JSON text an API would send."""
    base = datetime(day.year, day.month, day.day, tzinfo=UTC)
    moment = base + timedelta(seconds=(number * 7919) % 86_400, microseconds=number % 997_000)
    offset = OFFSETS[number % len(OFFSETS)]
    sale_date = _stamp(moment, offset, number % 3 == 0)
    updated_at = _stamp(moment + timedelta(minutes=3 * version), "Z", False)
    # Skewed stores and products: a few are very busy.
    store = int(rng.paretovariate(1.2)) % 400
    product = int(rng.paretovariate(1.1)) % 20_000
    quantity = 1 + number % 7 + (version - 1)
    cents = 99 + (number * 104_729) % 250_000
    unit_price: str = f"{cents // 100}.{cents % 100:02d}"
    amount_cents = cents * quantity
    amount = f"{amount_cents // 100}.{amount_cents % 100:02d}"
    fields: dict[str, str] = {
        "sale_id": f'"ORD-{day:%Y%m%d}-{number:010d}-7f3a9c1e5b2d4a6c8e0f1a3b5c7d9e1f"',
        "sale_date": f'"{sale_date}"',
        "store_id": f'"store-{store:04d}-eu-west"',
        "product_id": f'"SKU-{product:06d}-{"x" * (number % 5)}"',
        "customer_id": "null" if number % 10 == 0 else f'"cust-{(number * 31) % 900_000:07d}"',
        "quantity": str(quantity),
        # JSON numbers with trailing zeros ("12.50") test that the literal text is kept.
        "unit_price": unit_price if number % 2 else f'"{unit_price}"',
        "amount": amount if number % 4 == 1 else f'"{amount}"',
        "currency": f'"{CURRENCIES[number % len(CURRENCIES)]}"',
        "updated_at": f'"{updated_at}"',
    }
    if number % 13 == 0:
        fields["channel"] = '{"kind":"web","tags":["a","b"],"score":1.50}'
    if breakage is not None:
        broken = _break(fields, breakage, day)
        if broken is not None:
            return broken
    return "{" + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"


def _break(fields: dict[str, str], breakage: str, day: date) -> str | None:
    """Break ``fields`` in place; returns a whole replacement text for non-objects."""
    if breakage == "not_an_object_list":
        return f"[{fields['sale_id']}, {fields['amount']}]"
    if breakage == "not_an_object_string":
        return '"sale, but as text"'
    if breakage == "missing_sale_id":
        del fields["sale_id"]
    elif breakage == "long_sale_id":
        fields["sale_id"] = '"' + "L" * 80 + '"'
    elif breakage == "bad_sale_date":
        fields["sale_date"] = '"23/11/2026 10:00"'
    elif breakage == "sale_date_without_offset":
        fields["sale_date"] = f'"{day.isoformat()}T10:00:00"'
    elif breakage == "sale_date_other_day":
        fields["sale_date"] = f'"{(day - timedelta(days=1)).isoformat()}T23:00:00Z"'
    elif breakage == "missing_updated_at":
        del fields["updated_at"]
    elif breakage == "missing_store_id":
        del fields["store_id"]
    elif breakage == "control_char_store_id":
        fields["store_id"] = '"store\\u0000-1"'
    elif breakage == "long_product_id":
        fields["product_id"] = '"' + "P" * 300 + '"'
    elif breakage == "numeric_customer_id":
        fields["customer_id"] = "12345"
    elif breakage == "quantity_string":
        fields["quantity"] = f'"{fields["quantity"]}"'
    elif breakage == "quantity_zero":
        fields["quantity"] = "0"
    elif breakage == "quantity_fraction":
        fields["quantity"] = "1.50"
    elif breakage == "negative_unit_price":
        fields["unit_price"] = "-3.10"
    elif breakage == "unit_price_five_decimals":
        fields["unit_price"] = "1.23450"
    elif breakage == "amount_with_text":
        fields["amount"] = '"12,50 EUR"'
    elif breakage == "amount_exponent":
        fields["amount"] = "1.25E2"
    elif breakage == "unknown_currency":
        fields["currency"] = '"XXY"'
    elif breakage == "zero_amount":
        fields["amount"] = "0.00"
    elif breakage == "negative_amount":
        fields["amount"] = '"-19.90"'
    return None


def realistic_pages(
    day: date,
    records: int,
    *,
    page_size: int = 10_000,
    reject_share: float = 0.10,
    duplicate_share: float = 0.05,
    nan_every_pages: int = 37,
    seed: int = 20261123,
) -> Iterator[tuple[int, bytes]]:
    """(record count, body) of each page of a realistic day of ``records`` records."""
    rng = random.Random(seed)
    recent: list[int] = []
    produced = 0
    page_number = 0
    while produced < records:
        texts: list[str] = []
        for _ in range(min(page_size, records - produced)):
            if recent and rng.random() < duplicate_share:
                # A later version of an earlier sale of the day.
                number, version = recent[rng.randrange(len(recent))], 2
            else:
                number, version = produced, 1
                recent.append(number)
                if len(recent) > 50_000:
                    recent = recent[25_000:]
            breakage = rng.choice(BREAKAGES) if rng.random() < reject_share else None
            texts.append(_record_text(day, rng, number, version, breakage))
            produced += 1
        if nan_every_pages and page_number % nan_every_pages == nan_every_pages - 1:
            # Python's json.dumps writes NaN for a float nan: only the lossless parser reads it.
            texts[-1] = texts[-1].replace('"currency"', '"amount_check": NaN, "currency"', 1)
        cursor = "null" if produced >= records else f'"c{produced}"'
        body = '{"data": [' + ", ".join(texts) + '], "next_cursor": ' + cursor + "}"
        yield len(texts), body.encode()
        page_number += 1


def write_realistic_day(
    lake: Lake,
    day: date,
    records: int,
    *,
    page_size: int = 10_000,
    part_bytes: int = 32 << 20,
    **options: float,
) -> SnapshotRef:
    """Write a committed raw snapshot of a realistic day (see :func:`realistic_pages`)."""
    writer = RawSnapshotWriter(lake, day, part_bytes=part_bytes)
    for number, (count, body) in enumerate(
        realistic_pages(day, records, page_size=page_size, **options)  # type: ignore[arg-type]
    ):
        writer.add(Page(number=number, body=body, records=[None] * count, next_cursor=None))
    return writer.commit()


# --- measuring: one job per fresh process, so each peak RSS is its own ---------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _raw(lake_dir: str) -> tuple[Any, SnapshotRef]:
    from sales_etl.lake import LocalLake
    from sales_etl.snapshots import list_snapshots

    store = LocalLake(lake_dir)
    return store, list_snapshots(store, "raw", DAY)[0]


def job_generate(args: dict[str, Any]) -> dict[str, Any]:
    from sales_etl.lake import LocalLake

    started = time.perf_counter()
    raw = write_realistic_day(
        LocalLake(args["lake"]), DAY, args["records"], reject_share=args.get("reject_share", 0.1)
    )
    return {"parts": len(raw.manifest["parts"]), "seconds": time.perf_counter() - started}


def job_sequential(args: dict[str, Any]) -> dict[str, Any]:
    """transform_snapshot in this process (what TASK_RUNNER=auto with one part does)."""
    from sales_etl.transform import transform_snapshot

    store, raw = _raw(args["lake"])
    started, cpu = time.perf_counter(), time.process_time()
    clean = transform_snapshot(store, raw, strict=args.get("strict", True))
    seconds = time.perf_counter() - started
    return {
        "records": clean.manifest["records"],
        "rejected": clean.manifest["rejected"],
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "records_per_s": clean.manifest["records"] / seconds,
    }


def job_dask(args: dict[str, Any]) -> dict[str, Any]:
    """The per-part functions of the ``transform-part`` tasks on a local dask.distributed
    cluster of ``workers`` single-threaded worker processes (no Prefect: its ~5 ms per task
    run is the same on any runner)."""
    from distributed import Client, LocalCluster

    from sales_etl.transform import commit_clean_snapshot, plan_parts

    store, raw = _raw(args["lake"])
    with (
        LocalCluster(
            n_workers=args["workers"], threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_worker)
        cpu_before = client.run(time.process_time)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        parts = plan_parts(store, raw)
        futures = [
            client.submit(_transform_part_on_worker, args["lake"], part, pure=False)
            for part in parts
        ]
        written = client.gather(futures)
        clean = commit_clean_snapshot(store, raw, written)
        seconds = time.perf_counter() - started
        cpu = client.run(time.process_time)
        worker_rss = client.run(_peak_rss_mb)
    worker_cpu = [cpu[w] - cpu_before[w] for w in cpu]
    return {
        # CPU seconds of the busiest worker: the wall time this split would take with a core
        # per worker to itself (the machine may be shared).
        "worker_cpu_seconds": worker_cpu,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "records": clean.manifest["records"],
        "workers": args["workers"],
        "parts": len(parts),
        "seconds": seconds,
        "records_per_s": clean.manifest["records"] / seconds,
        "worker_peak_rss_mb": max(worker_rss.values()),
    }


def _warm_worker() -> None:
    import sales_etl.transform  # noqa: F401  (imports are not part of the measured time)


def _transform_part_on_worker(lake_dir: str, part: Any) -> Any:
    from sales_etl.lake import LocalLake
    from sales_etl.transform import transform_part

    return transform_part(LocalLake(lake_dir), part)


def _median(rows: list[dict[str, Any]], records: int, variant: str) -> tuple[float, float] | None:
    """Median (wall seconds, busiest worker's CPU seconds) of a variant's runs."""
    runs = [r for r in rows if r["records"] == records and r["variant"] == variant]
    if not runs:
        return None
    walls = sorted(r["seconds"] for r in runs)
    cpus = sorted(max(r["worker_cpu_seconds"]) for r in runs)
    return walls[len(walls) // 2], cpus[len(cpus) // 2]


JOBS = {"generate": job_generate, "sequential": job_sequential, "dask": job_dask}


def run_job(job: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter; its result includes that process's peak RSS."""
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.transform", "--job", job, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(x for x in output.splitlines() if x.startswith(RESULT_PREFIX))
    result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transform",
        description="Transform benchmark on a realistic day (10%% rejects over every reason, "
        "5%% duplicates, long ids): records/s and peak RSS, in one process and on a local "
        "dask.distributed cluster of 1 and 2 worker processes.",
    )
    parser.add_argument("--records", default="1000000,5000000", help="day sizes, comma-separated")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts, comma-separated")
    parser.add_argument(
        "--parallel-min",
        type=int,
        default=5_000_000,
        help="run the Dask variants only for days of at least this size",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each Dask variant, alternating (median)"
    )
    parser.add_argument("--workdir", default=None, help="where the throwaway lakes go")
    parser.add_argument("--reject-share", type=float, default=0.1, help="share of bad records")
    parser.add_argument(
        "--per-record",
        action="store_true",
        help="also run the sequential transform with every page judged record by record",
    )
    parser.add_argument("--job", nargs=2, metavar=("JOB", "ARGS"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.job:
        name, raw_args = options.job
        result = JOBS[name](json.loads(raw_args))
        result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    work = Path(tempfile.mkdtemp(prefix="transform-bench-", dir=options.workdir))
    rows: list[dict[str, Any]] = []
    try:
        for records in (int(x) for x in options.records.split(",")):
            lake = str(work / f"lake-{records}")
            generated = run_job(
                "generate",
                {"lake": lake, "records": records, "reject_share": options.reject_share},
            )
            print(
                f"{records:,} records: {generated['parts']} raw parts "
                f"(generated in {generated['seconds']:.0f} s)",
                flush=True,
            )
            variants: list[tuple[str, str, dict[str, Any]]] = [("sequential", "sequential", {})]
            if options.per_record:
                variants.append(("sequential, per-record", "sequential", {"strict": False}))
            if records >= options.parallel_min:
                variants += [
                    (f"dask, {n} worker{'s' if n > 1 else ''}", "dask", {"workers": n})
                    for n in (int(x) for x in options.workers.split(","))
                ]
            runs = [variants[0]] + variants[1:] * options.repeat
            if options.per_record:
                runs = variants[:2] + variants[2:] * options.repeat
            for label, job, extra in runs:
                shutil.rmtree(Path(lake) / "clean", ignore_errors=True)
                result = run_job(job, {"lake": lake, **extra})
                rows.append({"records": records, "variant": label, **result})
                rss = result.get("worker_peak_rss_mb")
                cpu = result.get("worker_cpu_seconds")
                print(
                    f"  {label:<18} {result['seconds']:7.1f} s  "
                    f"{result['records_per_s']:>9,.0f} records/s  peak RSS "
                    f"{result['peak_rss_mb']:.0f} MB"
                    + (f" (driver), {rss:.0f} MB (largest worker)" if rss else "")
                    + (f"; worker CPU s {[round(c, 1) for c in cpu]}" if cpu else "")
                    + (f"; load {result['load_average']}" if cpu else ""),
                    flush=True,
                )
        for records in sorted({r["records"] for r in rows}):
            one = _median(rows, records, "dask, 1 worker")
            two = _median(rows, records, "dask, 2 workers")
            if one and two:
                print(
                    f"{records:,} records, median of {options.repeat}: 2 workers / 1 worker = "
                    f"{one[0] / two[0]:.2f}x wall, {one[1] / two[1]:.2f}x busiest-worker CPU"
                )
        print("JSON " + json.dumps(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
