"""Report: the study's summary tables with confidence intervals, and an HTML page to read and listen to.

Data, then its presentation: ``tables`` (rows and the study's rule), ``uncertainty``, ``compare`` and ``checks``
read and compute; ``sections`` turns that into one template context per section, with ``figures`` drawing
the plots; ``pages`` fills the Jinja2 templates in ``templates/``; ``cli`` is the command that runs them.
"""
from .tables import best_rows, full_tables, read_results, score

__all__ = ["best_rows", "full_tables", "read_results", "score"]
