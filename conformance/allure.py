"""Allure labels, links and environment for the conformance cases.

Only used when pytest runs with ``--alluredir`` (allure-pytest's option).  Each
case gets, per clause it cites:

- epic: the spec chapter (``2 Basic Facilities of a Virtio Device``),
- feature: the clause's area (``split``, ``blk``, ...),
- story: the clause ID and its section,
- a link to the clause's section of the VIRTIO 1.2 specification,

and one severity from the strictest level it cites (MUST -> critical,
SHOULD -> normal, MAY -> minor).  The target's description becomes the
report's environment (``environment.properties`` in the results directory).

The spec link is a template with ``{section}`` and ``{title}`` (URL-encoded);
no network is used to build it.  The default points into the HTML rendering
of VIRTIO 1.2 cs01 with a text fragment that a browser scrolls to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from conformance.outcomes import severity

SPEC_URL_TEMPLATE = ("https://docs.oasis-open.org/virtio/virtio/v1.2/cs01/virtio-v1.2-cs01.html"
                     "#:~:text={section}%20{title}")
# A text fragment ("#:~:text=") gives '-', ',' and '&' meanings of their own: encode them.
_FRAGMENT_SAFE = ""

#: VIRTIO 1.2 chapters (the first component of a section number).
CHAPTERS = {
    "1": "Introduction",
    "2": "Basic Facilities of a Virtio Device",
    "3": "General Initialization And Device Operation",
    "4": "Virtio Transport Options",
    "5": "Device Types",
    "6": "Reserved Feature Bits",
    "7": "Conformance",
}


def chapter(section: str) -> str:
    number = section.split(".", 1)[0]
    title = CHAPTERS.get(number)
    return f"{number} {title}" if title else f"Chapter {number}"


def spec_link(section: str, title: str, template: str = SPEC_URL_TEMPLATE) -> str:
    def enc(text: str) -> str:
        return quote(text, safe=_FRAGMENT_SAFE).replace("-", "%2D")

    return template.format(section=enc(section), title=enc(title))


def labels_for(clauses: Iterable[Any], template: str = SPEC_URL_TEMPLATE
               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """([(label type, value)], [(url, link name)]) for a case citing ``clauses``."""
    clauses = list(clauses)
    labels: list[tuple[str, str]] = [("severity", severity(c.level for c in clauses))]
    links: list[tuple[str, str]] = []
    for c in clauses:
        labels += [("epic", chapter(c.section)), ("feature", c.area),
                   ("story", f"{c.id} ({c.section}, {c.level})")]
        links.append((spec_link(c.section, c.title, template),
                      f"VIRTIO 1.2 {c.section} {c.title}"))
    return labels, links


def mark_item(item: pytest.Item, clauses: Iterable[Any],
              template: str = SPEC_URL_TEMPLATE) -> None:
    """Attach the labels and links as allure-pytest's own markers (read at teardown)."""
    labels, links = labels_for(clauses, template)
    for label_type, value in labels:
        item.add_marker(pytest.mark.allure_label(value, label_type=label_type))
    seen = set()
    for url, name in links:
        if url not in seen:
            seen.add(url)
            item.add_marker(pytest.mark.allure_link(url, link_type="link", name=name))


def tag_item(item: pytest.Item, tag: str) -> None:
    """A tag added while the case runs (e.g. its outcome: deviation, xfailed)."""
    item.add_marker(pytest.mark.allure_label(tag, label_type="tag"))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested target metadata as dotted keys, the shape Allure's environment table shows."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            out[name] = ", ".join(str(v) for v in value)
        elif value is not None:
            out[name] = str(value)
    return out


def _escape(text: str, key: bool) -> str:
    # java.util.Properties: backslash escapes; in keys also '=', ':' and spaces.
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if key:
        for ch in "=: #!":
            text = text.replace(ch, "\\" + ch)
    return "".join(ch if ord(ch) < 0x7F else _unicode_escape(ch) for ch in text)


def _unicode_escape(ch: str) -> str:
    """``\\uXXXX`` per UTF-16 code unit (a character beyond U+FFFF takes two)."""
    units = ch.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}"
                   for i in range(0, len(units), 2))


def environment_properties(data: Mapping[str, Any]) -> str:
    flat = flatten(data)
    return "".join(f"{_escape(k, True)}={_escape(v, False)}\n" for k, v in sorted(flat.items()))


def write_environment(alluredir: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(alluredir) / "environment.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(environment_properties(data), encoding="latin-1")
    return path
