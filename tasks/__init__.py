"""Thin Prefect tasks around the plain functions of :mod:`sales_etl`.

A task adds retries, timeouts, caching, tags and logging; the logic lives in ``sales_etl``.
Tasks receive configuration as arguments, open their own clients and close them.
"""
