r"""One page shell for every page of the package; one placeholder syntax, one offline policy.

Every page (the readout page, the attack page, the patch map) is the same shell,
``static/shell.html``, around three files of its own under ``static/``:
``NAME.html`` (the body's markup), ``NAME.css`` and ``NAME.js``, plus its data as a
JSON block (``<script type="application/json" id=...>``). :func:`render_page` puts
them together; :func:`fill_template` fills ``{{NAME}}`` placeholders in one pass
(text inserted for one placeholder is never scanned for others). Every page carries
the same Content-Security-Policy, :data:`OFFLINE_CSP`: nothing but ``data:`` images
and the page's own inline style and script, so a page works from ``file://`` and
cannot reach the network.

Example:
    >>> from dense_readout.page.template import fill_template, json_payload
    >>> fill_template("<p>{{A}}</p><script>{{DATA}}</script>", {"A": "{{DATA}}", "DATA": json_payload({"x": "</script>"})})
    '<p>{{DATA}}</p><script>{"x":"<\\/script>"}</script>'
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

__all__ = ["OFFLINE_CSP", "fill_template", "json_payload", "render_page", "static_text"]

OFFLINE_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)
"""The pages' Content-Security-Policy (``{{CSP}}`` in a template)."""

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def json_payload(data: Any, *, ensure_ascii: bool = True) -> str:
    r"""``data`` as compact JSON that cannot close the ``<script>`` element it sits in.

    Example:
        >>> from dense_readout.page.template import json_payload
        >>> json_payload({"name": "a</script>b"})
        '{"name":"a<\\/script>b"}'
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=ensure_ascii)
    return text.replace("</", "<\\/")


def fill_template(template: str, parts: Mapping[str, str]) -> str:
    """``template`` with every ``{{NAME}}`` replaced by ``parts[NAME]`` (``CSP`` is given).

    Example:
        >>> from dense_readout.page.template import fill_template
        >>> fill_template('<meta content="{{CSP}}">', {}).count("default-src 'none'")
        1
        >>> fill_template("{{MISSING}}", {})
        Traceback (most recent call last):
        ...
        KeyError: 'template placeholder {{MISSING}} has no value'
    """
    values = {"CSP": OFFLINE_CSP, **parts}

    def value(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise KeyError(f"template placeholder {{{{{match.group(1)}}}}} has no value") from None

    return _PLACEHOLDER.sub(value, template)


def static_text(name: str) -> str:
    """The text of ``static/name``, a file shipped with the package (package data).

    Example:
        >>> static_text("shell.html").startswith("<!DOCTYPE html>")
        True
    """
    folder = resources.files(__package__).joinpath("static")
    return folder.joinpath(name).read_text(encoding="utf-8")


def render_page(
    asset: str, *, title: str, data: Any, data_id: str, ensure_ascii: bool = True
) -> str:
    """The page ``asset``: the shell around ``static/asset.{html,css,js}`` and ``data``.

    ``title`` is plain text (escaped here; " · dense readout" is appended); ``data``
    becomes the JSON block with id ``data_id`` that the page's script reads.

    Example:
        >>> page = render_page("readout", title="a<b", data={"x": 1}, data_id="readout-data")
        >>> page.startswith("<!DOCTYPE html>"), "<title>a&lt;b · dense readout</title>" in page
        (True, True)
        >>> '<script type="application/json" id="readout-data">{"x":1}</script>' in page
        True
    """
    parts = {
        "TITLE": html.escape(f"{title} · dense readout"),
        "BODY": static_text(f"{asset}.html"),
        "CSS": static_text(f"{asset}.css"),
        "JS": static_text(f"{asset}.js"),
        "DATA_ID": data_id,
        "DATA": json_payload(data, ensure_ascii=ensure_ascii),
    }
    return fill_template(static_text("shell.html"), parts)
