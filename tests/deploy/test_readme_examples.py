"""The README's examples are real: its OCSF finding validates, and every local file it links or shows exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.ocsfcheck import validate

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_finding_example_is_valid_ocsf() -> None:
    block = re.search(r"an OCSF Detection Finding on <code>security\.findings\.v1</code></summary>\s*```json\n(.*?)\n```", README, re.S)
    assert block, "the README's findings example block is missing"
    raw = json.loads(block.group(1))
    event = validate(json.dumps(raw).encode())
    assert event.class_uid == 2004 and raw["finding_info"]["tags"], "a detection finding with its OWASP tags"


def test_readme_local_links_exist() -> None:
    targets = re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", README)
    assert "docs/blueprint.png" in targets
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_blueprint_screenshot_is_a_png_with_content() -> None:
    data = (ROOT / "docs" / "blueprint.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
