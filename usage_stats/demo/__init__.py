"""Synthetic Matomo data with planted truth, for tests, benchmarks and `make demo`.

Out of the production path on purpose: nothing the pipeline or web services run imports it, so
the generator can change freely to exercise new rules without any risk to real statistics.
"""
