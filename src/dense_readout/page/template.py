"""Filling the pages' HTML templates: one placeholder syntax, one offline policy.

Every page of the package (the readout page, the attack page, the patch map) is a
template with ``{{NAME}}`` placeholders, filled in one pass (text inserted for one
placeholder is never scanned for others), and carries the same
Content-Security-Policy, :data:`OFFLINE_CSP`: nothing but ``data:`` images and the
page's own inline style and script, so a page works from ``file://`` and cannot
reach the network.

Example:
    >>> from dense_readout.page.template import fill_template, json_payload
    >>> fill_template("<p>{{A}}</p><script>{{DATA}}</script>", {"A": "{{DATA}}", "DATA": json_payload({"x": "</script>"})})
    '<p>{{DATA}}</p><script>{"x":"<\\\\/script>"}</script>'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["OFFLINE_CSP", "fill_template", "json_payload"]

OFFLINE_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)
"""The pages' Content-Security-Policy (``{{CSP}}`` in a template)."""

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def json_payload(data: Any, *, ensure_ascii: bool = True) -> str:
    """``data`` as compact JSON that cannot close the ``<script>`` element it sits in.

    Example:
        >>> from dense_readout.page.template import json_payload
        >>> json_payload({"name": "a</script>b"})
        '{"name":"a<\\\\/script>b"}'
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
