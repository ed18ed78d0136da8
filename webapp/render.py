"""Pages and their HTMX fragments from one template.

A page template names its fragments as `{% block %}`s. An HTMX request (header `HX-Request`)
gets only the named block; any other request gets the whole page, so every page also works
without JavaScript. Values are formatted by filters (webapp.filters), not macros, because a block
rendered alone does not see the macros defined at the top of its template.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request


def is_htmx() -> bool:
    """True for a request htmx made (not a boosted full-page navigation)."""
    return request.headers.get("HX-Request") == "true" and not request.headers.get("HX-Boosted")


def render(template_name: str, block: str | None = None, **context: Any) -> str:
    """The block `block` for an HTMX request, else the whole page."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if block is None or not is_htmx():
        return app.jinja_env.get_template(template_name).render(_context(app, context))
    template = app.jinja_env.get_template(template_name)
    if block not in template.blocks:
        raise KeyError(f"{template_name} has no block {block!r}")
    jinja_context = template.new_context(_context(app, context))
    return "".join(template.blocks[block](jinja_context))


def _context(app: Any, context: dict[str, Any]) -> dict[str, Any]:
    context = dict(context)
    app.update_template_context(context)
    return context
