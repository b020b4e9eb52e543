"""Plain, Prefect-free building blocks of the Daily Sales ETL.

Everything here is ordinary Python (requests, pandas, pyarrow, SQLAlchemy) that tests call
directly; ``tasks/`` wraps these functions in thin Prefect tasks and ``flows/`` composes them.
"""
