"""The blueprint page in a real headless Chromium (Debian's): its script runs, and the screenshot shows the map.

The DOM after the page's own script ran (``--dump-dom``) must carry the counts and one table row per endpoint,
with a hostile path shown as text; the screenshot must be the page (not blank) with each mark's colour on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from deploy.blueprint import rendered_dom, write_blueprint
from deploy.blueprinthtml import MARK_COLORS
from ingest.schema import AgentRecord, EndpointRecord, McpToolRecord

pytestmark = pytest.mark.integration
T0 = 1.8e9


def _endpoint(template: str, spec_status: str, **kw: Any) -> EndpointRecord:
    fields: dict[str, Any] = {"service": "orders", "namespace": "shop", "method": "GET", "path_template": template, "calls": 50, "callers": 2,
                              "top_callers": ["shop/frontend|user-1"], "auth_types": ["jwt"], "statuses": {"200": 50},
                              "first_seen": T0, "last_seen": T0 + 60, "spec_status": spec_status}
    return EndpointRecord(**{**fields, **kw})


RECORDS: list[Any] = [
    _endpoint("/orders/{id}", "declared", data_types=["email", "iban"]),
    _endpoint("/internal/debug/vars", "shadow", auth_types=["none"]),
    _endpoint("/v1/orders/{id}", "deprecated"),
    _endpoint("/x/<img src=x onerror=alert(1)>", "shadow"),
    _endpoint("/v1/charges", "undeclared", service="api.psp.example.com", namespace=None),
    AgentRecord(agent="agents/support-bot", tools_called={"mcp-shop/lookup_order": 3}, models={"gpt-4o-mini": 2}, first_seen=T0, last_seen=T0 + 9),
    McpToolRecord(server="mcp-shop", name="lookup_order", definitions_seen=2, calls=3, callers=1, first_seen=T0, last_seen=T0 + 9),
]


def _pixels_near(image: Image.Image, color: str, tolerance: int = 6) -> int:
    target = tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    return sum(n for n, px in image.getcolors(maxcolors=1 << 24) or [] if all(abs(a - b) <= tolerance for a, b in zip(px[:3], target)))


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("blueprint")
    write_blueprint(RECORDS, [], out / "blueprint.html", out / "blueprint.png")
    return out


def test_the_page_script_runs_in_chromium(drawn: Path) -> None:
    dom = rendered_dom(drawn / "blueprint.html")
    assert 'data-rendered="yes"' in dom
    assert re.search(r'id="count-endpoints">5 endpoints<', dom) and re.search(r'id="count-agents">1 agents<', dom)
    rows = dom.split('<tbody id="rows">')[1].split("</tbody>")[0]
    assert rows.count("<tr>") == 5
    assert "<img" not in rows and "&lt;img src=x onerror=alert(1)&gt;" in rows


def test_the_screenshot_shows_the_map_with_its_marks(drawn: Path) -> None:
    image = Image.open(drawn / "blueprint.png").convert("RGB")
    assert image.size == (1400, 1800)
    assert len(image.getcolors(maxcolors=1 << 24) or []) > 50  # drawn, not a blank page
    for mark in ("shadow", "zombie", "sensitive", "unauthenticated", "external", "changed"):
        assert _pixels_near(image, MARK_COLORS[mark]) > 80, mark


def test_one_service_name_in_two_namespaces_is_two_rows_and_two_boxes(tmp_path: Path) -> None:
    records = [_endpoint("/x", "declared", service="api", namespace="shop"), _endpoint("/x", "shadow", service="api", namespace="billing")]
    write_blueprint(records, [], tmp_path / "blueprint.html")
    dom = rendered_dom(tmp_path / "blueprint.html")
    assert re.search(r'id="count-services">2 services<', dom) and re.search(r'id="count-endpoints">2 endpoints<', dom)
    rows = dom.split('<tbody id="rows">')[1].split("</tbody>")[0]
    assert rows.count("<tr>") == 2 and "<td>shop/api</td>" in rows and "<td>billing/api</td>" in rows
    assert dom.count('class="svcname">api<') == 2
