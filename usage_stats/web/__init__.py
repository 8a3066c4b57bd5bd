"""The web services: statistics API, LA Referencia widgets, COUNTER R5.1 SUSHI (one ASGI app)."""

from usage_stats.web.app import create_app

__all__ = ["create_app"]
