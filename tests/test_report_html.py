"""Tests of pcrl.report.html: report.md as one self-contained page."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from pcrl.errors import DataError
from pcrl.report.html import markdown_to_html

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))

MARKDOWN = """# Title

| provenance | |
|---|---|
| data | the **phantom** |

Some `code` and a <tag> & more.

- first
- second

![ncc](plots/ncc.png)
"""


def test_tables_lists_escaping_and_embedded_images(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "ncc.png").write_bytes(PNG)
    page = markdown_to_html(MARKDOWN, tmp_path)
    assert "<h1>Title</h1>" in page
    assert "<tr><td>data</td><td>the <strong>phantom</strong></td></tr>" in page
    assert "<p>Some <code>code</code> and a &lt;tag&gt; &amp; more.</p>" in page
    assert "<ul><li>first</li><li>second</li></ul>" in page
    (encoded,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(encoded) == PNG
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:)', page) and "http" not in page.replace(
        "http-equiv", "")


def test_a_missing_image_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="plots/ncc.png"):
        markdown_to_html(MARKDOWN, tmp_path)
