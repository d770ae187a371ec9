"""The report's texts from its templates (``report/templates``, contexts from ``sections``): the HTML page, the
Markdown files and the terminal text. Jinja2 escapes what goes into the HTML; Markdown and the terminal text
show names as they are."""
from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

# trim_blocks and lstrip_blocks: a line holding only a tag writes nothing, so the Markdown templates read as the
# lines they write; StrictUndefined: a misspelt name is an error, not an empty cell
ENVIRONMENT = Environment(loader=PackageLoader("report", "templates"),
                          autoescape=select_autoescape(["html", "html.j2"]), trim_blocks=True, lstrip_blocks=True,
                          undefined=StrictUndefined)


def render(template: str, **context) -> str:
    return ENVIRONMENT.get_template(template).render(**context)
