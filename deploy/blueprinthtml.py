"""The blueprint as one self-contained HTML page: an SVG map of callers, services and endpoints, agents and tools.

``render_page(blueprint, title)`` returns the page: no external scripts, fonts or styles, so it opens from a
file, in a mail attachment or an air-gapped SOC. Left to right: callers (workloads or addresses, with how
many principals were seen behind them) -> services and their endpoints, each endpoint with its marks
(``MARK_COLORS``) and a risk bar (probed paths, which are no endpoints of the API, last, greyed, and
counted on their service's header; answered traversals, no endpoints either but traversals that worked, in their
own colour with a high risk, and counted on the header too); below, agents -> MCP tools and models. A table
of every endpoint follows, filtered as you type; the header's counts are filled by the page's own script from
the embedded data, so a browser that ran it shows them (``deploy.blueprint`` screenshots it in headless Chromium).

Pure: a string in, a string out.
"""

from __future__ import annotations

import html
import json
from typing import Any

from deploy.blueprintmodel import NOT_ENDPOINTS, Blueprint, Endpoint

__all__ = ["MARK_COLORS", "render_page", "risk_color"]

MARK_COLORS: dict[str, str] = {
    "shadow": "#8e44ad", "zombie": "#d35400", "sensitive": "#c0392b", "unauthenticated": "#f39c12",
    "external": "#2471a3", "undeclared": "#7f8c8d", "changed": "#e74c3c", "probed": "#99a3a4",
    "traversal-answered": "#a3157a",
}
ROW, HEAD, GAP = 18, 24, 10
X_CALLER, W_CALLER, X_SERVICE, W_SERVICE = 20, 250, 470, 520


def risk_color(risk: int) -> str:
    """Green (0) through amber to red (100).

    >>> risk_color(0), risk_color(100)
    ('#2ecc71', '#e74c3c')
    """
    r = max(0, min(100, risk)) / 100
    lo, mid, hi = (0x2E, 0xCC, 0x71), (0xF1, 0xC4, 0x0F), (0xE7, 0x4C, 0x3C)
    a, b, t = (lo, mid, r * 2) if r <= 0.5 else (mid, hi, (r - 0.5) * 2)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pills(marks: tuple[str, ...], x: float, y: float) -> tuple[list[str], float]:
    out = []
    for mark in marks:
        width = 7 * len(mark) + 10
        out.append(f'<rect x="{x:.0f}" y="{y - 11:.0f}" width="{width}" height="14" rx="7" fill="{MARK_COLORS[mark]}"/>'
                   f'<text x="{x + 5:.0f}" y="{y:.0f}" class="pill">{_e(mark)}</text>')
        x += width + 4
    return out, x


def _endpoint_row(e: Endpoint, y: float) -> list[str]:
    label = f"{e.method} {e.template}"
    probed = ' opacity="0.55"' if "probed" in e.marks else ""
    parts = [f'<g class="endpoint" data-key="{_e(e.key)}"{probed}><title>{_e(e.key)}: {e.calls} calls, {e.callers} callers, '
             f'risk {e.risk}{_e(", data: " + ", ".join(e.data_types)) if e.data_types else ""}</title>',
             f'<rect x="{X_SERVICE + 8}" y="{y - 11}" width="26" height="14" rx="3" fill="{risk_color(e.risk)}"/>'
             f'<text x="{X_SERVICE + 21}" y="{y}" class="pill" text-anchor="middle">{e.risk}</text>',
             f'<text x="{X_SERVICE + 42}" y="{y}" class="ep">{_e(label[:60])}</text>']
    shown = tuple(m for m in e.marks if m != "undeclared")  # every endpoint of a service without a spec: said once, on the service
    pills, _ = _pills(shown, X_SERVICE + 42 + 7.2 * min(len(label), 60) + 8, y)
    return parts + pills + ["</g>"]


def _api_map(bp: Blueprint) -> tuple[list[str], float]:
    """The callers -> endpoints part of the SVG and its height."""
    out: list[str] = []
    ys: dict[str, float] = {}
    y = 40.0
    out.append(f'<text x="{X_SERVICE}" y="24" class="col">services and endpoints</text>'
               f'<text x="{X_CALLER}" y="24" class="col">callers</text>')
    for service in bp.services.values():
        height = HEAD + ROW * len(service.endpoints) + 6
        kind = "external" if service.external else (service.namespace or "")
        real = [e for e in service.endpoints if not set(NOT_ENDPOINTS) & set(e.marks)]
        if real and all("undeclared" in e.marks for e in real):
            kind += " · no spec"
        for mark in NOT_ENDPOINTS:
            if count := sum(mark in e.marks for e in service.endpoints):
                kind += f" · {count} {mark.replace('-', ' ')}"
        out.append(f'<rect x="{X_SERVICE}" y="{y}" width="{W_SERVICE}" height="{height}" rx="6" class="svc" '
                   f'stroke="{risk_color(service.risk)}"/>'
                   f'<text x="{X_SERVICE + 8}" y="{y + 16}" class="svcname">{_e(service.name)}</text>'
                   f'<text x="{X_SERVICE + W_SERVICE - 8}" y="{y + 16}" class="svcns" text-anchor="end">{_e(kind)} · {service.calls} calls</text>')
        for i, endpoint in enumerate(service.endpoints):
            row_y = y + HEAD + ROW * i + 12
            ys[endpoint.key] = row_y - 4
            out += _endpoint_row(endpoint, row_y)
        y += height + GAP
    callers = sorted(bp.callers.values(), key=lambda c: (-len(c.endpoints), c.name))
    step = max(36.0, (y - 40) / max(1, len(callers)))
    edges: list[str] = []
    for i, caller in enumerate(callers):
        cy = 40 + step * i + 13
        people = f" · {len(caller.principals)} principals" if caller.principals else ""
        flag = f" · {caller.findings} findings" if caller.findings else ""
        stroke = f' stroke="{MARK_COLORS["sensitive"]}" stroke-width="2"' if caller.findings else ""
        out.append(f'<g class="caller"><rect x="{X_CALLER}" y="{cy - 14}" width="{W_CALLER}" height="30" rx="5" class="cal"{stroke}/>'
                   f'<text x="{X_CALLER + 8}" y="{cy - 1}" class="ep">{_e(caller.name[:32])}</text>'
                   f'<text x="{X_CALLER + 8}" y="{cy + 12}" class="svcns">{len(caller.endpoints)} endpoints{people}{flag}</text></g>')
        for key in sorted(caller.endpoints):
            if key in ys:
                x0, x1, ey = X_CALLER + W_CALLER, X_SERVICE, ys[key]
                edges.append(f'<path d="M{x0},{cy - 2} C{x0 + 100},{cy - 2} {x1 - 100},{ey} {x1},{ey}" class="edge"/>')
    return edges + out, max(y, 40 + step * len(callers)) + 20


def _agent_map(bp: Blueprint, top: float) -> tuple[list[str], float]:
    """Agents -> tools and models, below the API map."""
    if not bp.agents and not bp.tools:
        return [], top
    out = [f'<text x="{X_CALLER}" y="{top + 20}" class="col">agents</text>'
           f'<text x="{X_SERVICE}" y="{top + 20}" class="col">MCP tools and models</text>']
    targets: dict[str, float] = {}
    y = top + 40
    names = sorted({t for _, t, _ in bp.agent_tools} | set(bp.tools) | {f"model {m}" for _, m, _ in bp.agent_models})
    for name in names:
        tool = bp.tools.get(name)
        marks = tool.marks if tool else ()
        out.append(f'<rect x="{X_SERVICE}" y="{y - 13}" width="{W_SERVICE}" height="20" rx="5" class="svc"/>'
                   f'<text x="{X_SERVICE + 8}" y="{y + 1}" class="ep">{_e(name[:60])}</text>')
        pills, _ = _pills(marks, X_SERVICE + 8 + 7.2 * min(len(name), 60) + 8, y + 1)
        out += pills
        targets[name] = y - 3
        y += 24
    ay = top + 40
    for agent in bp.agents.values():
        label = f"{agent.agent} · {agent.sent_sensitive} sensitive sent" if agent.sent_sensitive else agent.agent
        out.append(f'<rect x="{X_CALLER}" y="{ay - 13}" width="{W_CALLER}" height="20" rx="5" class="cal"/>'
                   f'<text x="{X_CALLER + 8}" y="{ay + 1}" class="ep">{_e(label[:34])}</text>')
        for _, name, _ in [t for t in bp.agent_tools if t[0] == agent.agent]:
            out.insert(0, f'<path d="M{X_CALLER + W_CALLER},{ay - 3} C{X_CALLER + W_CALLER + 100},{ay - 3} {X_SERVICE - 100},{targets[name]} {X_SERVICE},{targets[name]}" class="edge"/>')
        for _, model, _ in [m for m in bp.agent_models if m[0] == agent.agent]:
            ty = targets[f"model {model}"]
            out.insert(0, f'<path d="M{X_CALLER + W_CALLER},{ay - 3} C{X_CALLER + W_CALLER + 100},{ay - 3} {X_SERVICE - 100},{ty} {X_SERVICE},{ty}" class="edge model"/>')
        ay += 24
    return out, max(y, ay) + 20


def _legend(width: int) -> str:
    x, parts = 20.0, []
    for mark, color in MARK_COLORS.items():
        parts.append(f'<rect x="{x:.0f}" y="6" width="12" height="12" rx="3" fill="{color}"/><text x="{x + 16:.0f}" y="16" class="svcns">{mark}</text>')
        x += 16 + 7 * len(mark) + 18
    parts.append(f'<text x="{x + 10:.0f}" y="16" class="svcns">risk:</text>')
    for i, risk in enumerate(range(0, 101, 20)):
        parts.append(f'<rect x="{x + 46 + 14 * i:.0f}" y="6" width="14" height="12" fill="{risk_color(risk)}"/>')
    return f'<svg width="{width}" height="24" class="legend">{"".join(parts)}</svg>'


def _data(bp: Blueprint) -> dict[str, Any]:
    return {"summary": bp.summary(), "endpoints": [
        {"service": e.service, "namespace": e.namespace, "method": e.method, "template": e.template, "calls": e.calls, "callers": e.callers,
         "marks": list(e.marks), "data": list(e.data_types), "auth": list(e.auth_types), "risk": e.risk, "findings": e.findings}
        for e in sorted(bp.endpoints, key=lambda e: (-e.risk, e.key))]}


_STYLE = """
body{font:13px system-ui,sans-serif;margin:16px;color:#1c2833;background:#fbfcfc}
h1{font-size:20px;margin:0 0 4px} .sub{color:#566573;margin-bottom:10px}
.counts span{display:inline-block;margin-right:14px;font-weight:600}
svg text{font:12px ui-monospace,monospace;fill:#1c2833} .pill{fill:#fff;font-size:10px}
.col{font:600 13px system-ui,sans-serif;fill:#566573} .svcname{font-weight:700} .svcns{fill:#566573;font-size:11px}
.svc{fill:#fff;stroke-width:2} .cal{fill:#eaf2f8;stroke:#aab7b8} .edge{fill:none;stroke:#5d6d7e;stroke-opacity:.25}
.edge.model{stroke:#8e44ad;stroke-dasharray:4 3}
table{border-collapse:collapse;margin-top:14px} td,th{border-bottom:1px solid #d5d8dc;padding:3px 8px;text-align:left}
input{margin-top:12px;padding:4px 8px;width:320px}
"""

_SCRIPT = """
const esc = v => String(v).replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const data = JSON.parse(document.getElementById('blueprint-data').textContent);
const s = data.summary;
document.getElementById('counts').innerHTML = ['services','endpoints','callers','agents','tools','high_risk']
  .map(k => `<span id="count-${k}">${esc(s[k])} ${k.replace('_',' ')}</span>`).join('') +
  Object.entries(s.marks).map(([k,v]) => `<span class="mark">${esc(v)} ${esc(k)}</span>`).join('');
const body = document.getElementById('rows');
function draw(filter) {
  body.innerHTML = data.endpoints.filter(e => !filter || JSON.stringify(e).toLowerCase().includes(filter))
    .map(e => `<tr><td>${esc(e.risk)}</td><td>${esc(e.namespace ? e.namespace + '/' + e.service : e.service)}</td><td>${esc(e.method)} ${esc(e.template)}</td><td>${esc(e.calls)}</td>`+
      `<td>${esc(e.callers)}</td><td>${esc(e.marks.join(', '))}</td><td>${esc(e.data.join(', '))}</td><td>${esc(e.auth.join(', '))}</td>`+
      `<td>${esc(e.findings)}</td></tr>`).join('');
}
document.getElementById('filter').addEventListener('input', ev => draw(ev.target.value.toLowerCase()));
draw('');
document.body.dataset.rendered = 'yes';
"""


def render_page(bp: Blueprint, title: str = "Kubeward blueprint", subtitle: str = "") -> str:
    """The self-contained HTML page of a blueprint."""
    api, height = _api_map(bp)
    agents, height = _agent_map(bp, height)
    width = X_SERVICE + W_SERVICE + 380
    data = json.dumps(_data(bp)).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_STYLE}</style></head><body>'
            f'<h1>{_e(title)}</h1><div class="sub">{_e(subtitle)}</div><div id="counts" class="counts"></div>{_legend(width)}'
            f'<svg id="map" width="{width}" height="{height:.0f}" viewBox="0 0 {width} {height:.0f}" xmlns="http://www.w3.org/2000/svg">'
            f'{"".join(api)}{"".join(agents)}</svg>'
            f'<div><input id="filter" placeholder="filter endpoints (service, path, mark, data type)"></div>'
            '<table><thead><tr><th>risk</th><th>service</th><th>endpoint</th><th>calls</th><th>callers</th><th>marks</th><th>data</th>'
            '<th>auth</th><th>findings</th></tr></thead><tbody id="rows"></tbody></table>'
            f'<script type="application/json" id="blueprint-data">{data}</script><script>{_SCRIPT}</script></body></html>')
