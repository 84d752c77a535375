"""``pipeline import``: existing events from files into the pipeline, exactly once, verified.

Files (JSON Lines or CSV, optionally gzip; one kind per file with ``--kind``, or a
``type`` field per line) go through the contract's validation and are produced to the
kinds' topics, so the workers apply them like live traffic; the import then compares the
files' counts and sums per kind and UTC day with what PostgreSQL gained. The runbook is
docs/operations.md, "Importing existing data".

Reading guide, one job per module:

- ``sources``: reading a file line by line (format, gzip, CSV header, line numbers, hash);
- ``csv_cells``: typing CSV cells by the kinds' JSON Schemas;
- ``records``: deciding a line (event or reject) and cutting a file into deterministic,
  keyed records of chunks of lines;
- ``scan``: the first pass (rejects, figures);
- ``figures``: counts and sums per kind and day, from events and from PostgreSQL;
- ``position``: the position file, written atomically;
- ``tail``: fences, and finding an interrupted run's records in the topics;
- ``send``: the second pass (producing, checkpoints);
- ``verify``: retention cut-offs, waiting for the workers, the comparison;
- ``job``: the order of the steps (:func:`run_import`).

Importing this package does no I/O.
"""

from pipeline.importer.job import ImportOptions, Reporter, run_import

__all__ = ["ImportOptions", "Reporter", "run_import"]
