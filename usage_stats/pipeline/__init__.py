"""The pipeline's rules: raw Matomo rows → canonical events → cleaned events → COUNTER metrics.

Every rule that decides what a number means lives here, as pure Polars transforms with no I/O
beyond reading the lake, so each can be tested on planted truth and changed without touching
where the data is kept (`storage`) or how it is served (`web`).
"""
