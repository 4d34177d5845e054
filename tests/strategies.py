"""Hypothesis strategies for the wire records of ``ingest.schema``.

Values stay inside what every carrier can hold exactly: finite floats,
64-bit integers (Arrow ``int64``) and any non-surrogate text.
"""

from __future__ import annotations

import base64

from hypothesis import strategies as st

from ingest import DeadLetter, Destination, Finding, FindingInfo, GroundTruth, Reason, RequestSummary, Scope, Source, Subject, Verdict
from ingest.schema import LlmExtras, McpExtras, McpTool

texts = st.text(max_size=12)
opt_texts = st.none() | texts
floats = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
opt_int64 = st.none() | int64

sources = st.builds(Source, workload=opt_texts, namespace=opt_texts, pod=opt_texts, ip=opt_texts, external=st.booleans())
destinations = st.builds(Destination, service=texts, namespace=opt_texts, host=opt_texts, port=opt_int64, external=st.booleans())
mcp_extras = st.builds(McpExtras, jsonrpc_method=opt_texts, tool_name=opt_texts, tool_hash=opt_texts, session=opt_texts,
                       server=opt_texts, tools=st.lists(st.builds(McpTool, name=texts, hash=texts, poisoned=st.none() | st.booleans(), score=st.none() | floats, traits=st.lists(texts, max_size=2)), max_size=3), target=opt_texts,
                       error_code=opt_int64, tool_error=st.none() | st.booleans())
llm_extras = st.builds(LlmExtras, model=opt_texts, input_tokens=opt_int64, output_tokens=opt_int64, operation=opt_texts,
                       tools_offered=opt_int64, tool_calls=st.lists(texts, max_size=3), sent_sensitive=opt_int64,
                       sent_types=st.lists(texts, max_size=3))
ground_truths = st.builds(GroundTruth, scenario=texts, attack_id=opt_texts, malicious=st.booleans())

summaries = st.builds(
    RequestSummary,
    schema_version=st.integers(min_value=1, max_value=3),
    id=texts,
    time=floats,
    duration_ms=st.none() | floats,
    reporter=texts,
    source=sources,
    principal=opt_texts,
    auth_type=opt_texts,
    destination=destinations,
    protocol=texts,
    method=texts,
    path_template=texts,
    raw_path=opt_texts,
    status=opt_int64,
    request_bytes=int64,
    response_bytes=int64,
    object_ids=st.lists(texts, max_size=4),
    sensitive=st.dictionaries(texts, int64, max_size=3),
    inline_findings=st.lists(texts, max_size=3),
    decision=opt_texts,
    mcp=st.none() | mcp_extras,
    llm=st.none() | llm_extras,
    trace_id=opt_texts,
    ground_truth=st.none() | ground_truths,
)

unit_floats = st.floats(min_value=0.0, max_value=1.0)
reasons = st.builds(Reason, detector=texts, score=unit_floats, evidence=texts)
subjects = st.builds(Subject, kind=st.sampled_from(["actor", "workload", "principal", "ip", "endpoint", "tool"]), value=texts)
scopes = st.builds(Scope, service=opt_texts, path_template=opt_texts, tool=opt_texts)

verdicts = st.builds(
    Verdict,
    id=texts,
    subject=subjects,
    scope=st.none() | scopes,
    action=st.sampled_from(["block", "throttle", "redact", "quarantine"]),
    rate_per_s=st.none() | floats,
    burst=opt_int64,
    mode=st.sampled_from(["observe", "enforce"]),
    expires_at=floats,
    reasons=st.lists(reasons, max_size=3),
    finding_ids=st.lists(texts, max_size=2),
    policy_version=texts,
    issued_at=floats,
    evidence_time=floats,
    signature=texts,
)

finding_infos = st.builds(
    FindingInfo,
    uid=texts,
    title=texts,
    desc=texts,
    types=st.lists(texts, max_size=2),
    analytic=st.dictionaries(texts, texts | int64, max_size=3),
)

findings = st.builds(
    Finding,
    time=int64,
    severity_id=st.integers(min_value=0, max_value=6),
    confidence_score=st.integers(min_value=0, max_value=100),
    action_id=st.integers(min_value=0, max_value=2),
    disposition_id=st.integers(min_value=0, max_value=30),
    message=texts,
    finding_info=finding_infos,
    unmapped=st.dictionaries(texts, texts, max_size=3),
)

dead_letters = st.builds(
    DeadLetter,
    error=texts,
    source=texts,
    time=floats,
    topic=texts,
    partition=opt_int64,
    offset=opt_int64,
    raw_bytes=st.integers(min_value=0, max_value=2**40),
    raw_b64=st.binary(max_size=32).map(lambda b: base64.b64encode(b).decode()),
)
