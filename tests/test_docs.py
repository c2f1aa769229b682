"""The code's pointers into docs/method.md name sections that exist there."""

from __future__ import annotations

import re

from .conftest import REPO

POINTER = re.compile(r'docs/method\.md,\s+\\?"([^"\\]+)\\?"((?:\s+and\s+\\?"[^"\\]+\\?")*)')


def test_every_docs_method_pointer_names_a_section() -> None:
    method = (REPO / "docs" / "method.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^#{2,3} (.+)$", method, flags=re.MULTILINE))
    cited: dict[str, set[str]] = {}
    for folder in ("swclip_core", "swclip_qgis", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for first, more in POINTER.findall(path.read_text(encoding="utf-8")):
                names = [first, *re.findall(r'"([^"\\]+)\\?"', more)]
                cited.setdefault(str(path.relative_to(REPO)), set()).update(names)
    assert len(cited) >= 10, "the docstrings should point at docs/method.md"
    unknown = {path: names - sections for path, names in cited.items() if names - sections}
    assert not unknown, f"sections missing from docs/method.md: {unknown}"
