"""Where data is kept: the raw lake (local or S3), the Parquet warehouse and the stats store.

Kept apart from the rules so a deployment can swap a backend (a local folder for S3, DuckDB for
OpenSearch) behind one interface, and the pipeline and web services never depend on which one
is in use.
"""
