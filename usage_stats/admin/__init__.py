"""The admin DB: sources, countries, processing status and SUSHI customers (SQLAlchemy 2)."""
