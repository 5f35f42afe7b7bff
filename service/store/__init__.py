"""The collector's store: every SQL statement of the collector lives in these modules.

Each module has one job (hives, devices, ingest, read queries, hive state, alerts, webhook outbox, model
registry). Functions are keyword-only and take an engine (they open their own transaction) or a
connection (they run in the caller's). They raise :class:`~beeaudio.collector.store.errors.StoreError`
subclasses, never HTTP exceptions: the app maps those to statuses in one place
(:mod:`beeaudio.collector.http_errors`) and the CLI to exit codes.
"""
