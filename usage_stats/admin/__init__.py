"""The admin DB: sources, countries, processing status and SUSHI customers (SQLAlchemy 2).

Together with the source registry (`sources`: the CSV/XLSX format and its validation) and the
operator commands (`cli`), this is everything people configure; the pipeline only reads it.
"""
