"""Report: the study's summary tables with confidence intervals, and an HTML page to read and listen to."""
from .tables import best_rows, full_tables, read_results, score

__all__ = ["best_rows", "full_tables", "read_results", "score"]
