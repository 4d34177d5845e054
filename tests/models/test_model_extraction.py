"""Model extraction end to end (ingest/llm.py -> ingest/summarize.py -> streams/agentsignals.py -> models/rules/agents.yaml):
twelve minutes of a benign mix of agents, templated workloads and people chatting with a model gateway, with three
extraction clients among them, summarised by the collector's ``Summarizer`` and folded by the worker's processor with
every shipped rule and every enricher. Only the extraction clients may trip a model-extraction rule.

Requests are written in the OpenAI wire format as the official client sends it (``tests/ingest/test_llm.py`` checks
that the client's bodies hash the same); the stub model is not used here because its HTTP round trip (45 ms a call)
would make several thousand calls take minutes.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import pytest

from ingest.envelope import decode_messages, encode_rows
from ingest.observation import HttpObservation
from ingest.summarize import Summarizer
from models import REGISTRY, build_detectors
from models.registry import SHIPPED_RULES
from streams.detection import Detection
from streams.enrichers import ENRICHERS, build_enrichers
from streams.processor import BatchProcessor, ProcessorConfig

T0 = 1_800_000_000.0  # a window boundary: windows are 60 s, aligned on the epoch
GATEWAY = "llm-gateway.ai.svc.cluster.local"
SYSTEM = ("You are Acme's support assistant. Answer politely and briefly, never promise refunds, and use the tools to "
          "look orders up before answering questions about them.")
QUESTIONS = [
    "Where is my order {n}?", "Can I change the delivery address of order {n}?", "My parcel {n} arrived damaged, what now?",
    "How long do refunds take?", "Do you ship to Norway?", "Why was my card charged twice for order {n}?",
    "Is the blue kettle back in stock?", "How do I cancel my subscription?", "Can I return a gift without a receipt?",
    "What does the warranty on the X200 cover?", "I never got the confirmation email for {n}", "Which plan includes SSO?",
    "How do I rotate my API key?", "Why did my deploy fail last night?", "Explain the difference between a pod and a deployment",
    "Draft a polite reply to Ann about her late delivery", "Summarise this thread for me please", "What are your opening hours?",
]
WORDS = ("battery screen delivery price quality support colour size kettle phone charger box refund courier manual app "
         "update noise speed warranty strap lens cable sound").split()
REVIEWS = ("loved", "hated", "returned", "broke", "exceeded", "disappointed", "recommend", "avoid", "adore", "regret")


def chat_body(messages: list[dict[str, Any]], model: str = "gpt-4o-mini") -> bytes:
    return json.dumps({"messages": messages, "model": model}).encode()


def chat_answer(text: str, model: str = "gpt-4o-mini-2024-07-18") -> bytes:
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": int(T0), "model": model,
                       "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}}).encode()


class Client:
    """One caller of the model gateway (a pod or an external address, with its API key), as the collector sees it."""

    def __init__(self, address: str, key: str | None, summarizer: Summarizer, rows: list[dict[str, Any]]) -> None:
        self.address, self.key, self.summarizer, self.rows = address, key, summarizer, rows

    def post(self, t: float, path: str, body: bytes, answer: bytes) -> None:
        auth = {"authorization": f"Bearer {self.key}"} if self.key else {}  # None: a workload the gateway knows by its address
        obs = HttpObservation(time=T0 + t, method="POST", path=path, reporter="ext_proc", authority=GATEWAY, status=200,
                              headers={"content-type": "application/json", **auth},
                              peer_ip=self.address, request_body=body, response_headers={"content-type": "application/json"},
                              response_body=answer)
        self.rows.append(self.summarizer.summarize(obs))

    def chat(self, t: float, messages: list[dict[str, Any]]) -> None:
        self.post(t, "/v1/chat/completions", chat_body(messages), chat_answer("Thanks, noted."))

    def ask(self, t: float, text: str) -> None:
        self.chat(t, [{"role": "user", "content": text}])

    def embed(self, t: float, texts: list[str]) -> None:
        answer = {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 9, "total_tokens": 9},
                  "data": [{"object": "embedding", "index": i, "embedding": [0.1] * 8} for i in range(len(texts))]}
        self.post(t, "/v1/embeddings", json.dumps({"input": texts, "model": "text-embedding-3-small"}).encode(), json.dumps(answer).encode())


def question(rng: random.Random) -> str:
    return rng.choice(QUESTIONS).format(n=rng.randrange(10_000, 99_999))


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def support_agent(c: Client, rng: random.Random, end: float) -> None:
    """A ticket every ~7.5 s: the question, a tool call, the answer (three model calls repeating the user's question)."""
    t = rng.uniform(0, 5)
    while t < end:
        ask: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(rng)}]
        c.chat(t, ask)
        tool: list[dict[str, Any]] = [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                                              "function": {"name": "get_order", "arguments": "{}"}}]},
                                      {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"status": "shipped", "eta": "2 days"})}]
        c.chat(t + 1.5, ask + tool)
        c.chat(t + 3.0, ask + tool + [{"role": "assistant", "content": "Your order ships today."}])
        t += rng.uniform(6, 9)


def chat_user(c: Client, rng: random.Random, start: float, end: float) -> None:
    """A person chatting: a question every 10-40 s, the conversation's history sent along."""
    history = [{"role": "system", "content": "You are a helpful assistant."}]
    t = start + rng.uniform(0, 10)
    while t < end:
        history = history[-8:] + [{"role": "user", "content": question(rng)}]
        c.chat(t, history)
        history.append({"role": "assistant", "content": "Here is what I found."})
        t += rng.uniform(10, 40)


def benign(summarizer: Summarizer, rows: list[dict[str, Any]], end: float) -> None:
    rng = random.Random(8)
    for i in range(2):
        support_agent(Client(f"10.2.0.{11 + i}", f"sk-support-{i}", summarizer, rows), rng, end)
    classifier = Client("10.2.0.13", "sk-triage", summarizer, rows)  # a benign templated workload: 30 tickets a minute
    for k in range(int(end / 2)):
        classifier.ask(2 * k + 0.5, f"Classify this support ticket as billing, shipping or other.\n\nTicket: {question(rng)}")
    poller = Client("10.2.0.14", "sk-status", summarizer, rows)  # a busy loop: 120 calls a minute, four prompts
    for k in range(int(end * 2)):
        poller.ask(k / 2 + 0.2, ("Summarise today's open incidents.", "Any new alerts?", "Status of the EU cluster?",
                                 "Summarise today's open incidents.")[k % 4])
    indexer = Client("10.2.0.15", "sk-indexer", summarizer, rows)  # embeddings of document chunks, 16 per call
    for k in range(int(end / 6)):
        indexer.embed(6 * k + 1, [text(rng, 12) for _ in range(16)])
    rag = Client("10.2.0.16", None, summarizer, rows)  # a retrieval-augmented answering service: one template, every
    t = 0.3  # prompt distinct; 60 a minute, 120 from the 5th minute (its users grew), 200 in a peak in the 10th minute
    while t < end:
        rag.ask(t, f"Answer using only the context.\nContext: {text(rng, 30)}\nQuestion: {question(rng)}")
        t += 1.0 if t < 240 else 0.3 if 540 <= t < 600 else 0.5
    for i in range(3):
        chat_user(Client(f"10.3.0.{21 + i}", f"sk-user-{i}", summarizer, rows), rng, 0, end)


def probe(rng: random.Random, k: int) -> str:
    """One of an extraction client's templated probes (three templates, a different text each time)."""
    review = f"I {rng.choice(REVIEWS)} the {text(rng, 2)}, {rng.randrange(1, 6)}/5, {text(rng, 4)}"
    return (f'Classify the sentiment of this review as positive, negative or neutral: "{review}"',
            f"Translate to French: {text(rng, 8)}",
            f"Rate this review from 1 to 5.\nReview: {review}")[k % 3]


def extraction(summarizer: Summarizer, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Three extraction clients; address -> the rule each must trip."""
    rng = random.Random(1009)
    fresh = Client("198.51.100.7", "sk-new-signup", summarizer, rows)  # a new key: 200 probes a minute for 3 minutes,
    for k in range(600):  # starting 23 s before a window ends (the first window alone stays under the floor)
        fresh.ask(337 + 0.3 * k, probe(rng, k))
    carol = Client("10.3.0.24", "sk-user-carol", summarizer, rows)  # a person for 8 minutes, then her key probes
    chat_user(carol, rng, 0, 480)
    for k in range(300):
        carol.ask(480 + 0.4 * k, probe(rng, k))
    sweep = Client("10.4.0.31", None, summarizer, rows)  # a new workload: 720 varied questions in a minute, many shapes
    for k in range(720):
        sweep.ask(612 + k / 12, f"{rng.choice(QUESTIONS).format(n=k)} {text(rng, 3)}" if k % 2 else f"{text(rng, 5)}?")
    return {"198.51.100.7": "model-extraction-new-actor", "10.3.0.24": "model-extraction",
            "10.4.0.31": "model-extraction-volume-new-actor"}


def run(rows: list[dict[str, Any]], proc: BatchProcessor | None = None) -> list[Detection]:
    """Every row through the worker's processor in one-second batches (as collectors flush); by default every rule
    and every enricher."""
    proc = proc or BatchProcessor(ProcessorConfig(), build_detectors(sorted(REGISTRY)), build_enrichers(sorted(ENRICHERS)))
    batches: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["time"]):
        batches[int(row["time"])].append(row)
    found: list[Detection] = []
    for second in sorted(batches):
        table, errors = decode_messages([encode_rows(batches[second])], 1 << 30)
        assert table is not None and not errors
        found += proc.process(table)
    return found


@pytest.fixture(scope="module")
def traffic() -> tuple[list[dict[str, Any]], dict[str, str], list[Detection]]:
    summarizer, rows = Summarizer(), []  # type: ignore[var-annotated]
    benign(summarizer, rows, 720)
    expected = extraction(summarizer, rows)
    return rows, expected, run(rows)


def _extraction(found: list[Detection]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for d in found:
        for r in d.reasons:
            if r.detector.startswith("model-extraction"):
                out[d.actor.split("|")[0]].add(r.detector)
    return dict(out)


def test_the_extraction_clients_trip_their_rule_and_the_benign_mix_stays_quiet(traffic: Any) -> None:
    rows, expected, found = traffic
    assert len(rows) > 4500
    assert _extraction(found) == {address: {rule} for address, rule in expected.items()}
    assert {d.attack_class for d in found if any(r.detector.startswith("model-extraction") for r in d.reasons)} == {"model_extraction"}


def test_each_extraction_client_is_stopped_within_its_second_window(traffic: Any) -> None:
    _, expected, found = traffic
    first_probe = {"198.51.100.7": 337.0, "10.3.0.24": 480.0, "10.4.0.31": 612.0}
    for d in found:
        address = d.actor.split("|")[0]
        if address in expected and any(r.detector == expected[address] for r in d.reasons):
            assert d.evidence_time - T0 - first_probe[address] < 90, (address, d.evidence_time - T0)
            assert d.features["llm_distinct_prompts"] >= 100 and d.features["llm_calls"] >= d.features["llm_distinct_prompts"]


def test_the_benign_mix_has_the_shapes_of_a_prober_and_what_keeps_it_quiet(traffic: Any) -> None:
    """The triage classifier and the RAG service send one shape each and all-distinct prompts, like a prober: the
    classifier at a rate under the floor, the RAG service above it at its peak but within ten times its own usual rate
    (its first three windows, when it has no baseline yet, were under the floor); the busy poller has the rate but
    four prompts; agents and people ask a few distinct questions a minute."""
    rows, _, _ = traffic
    per_minute: dict[tuple[str, int], set[str]] = defaultdict(set)
    shapes: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["llm"] and row["llm"]["prompt_hash"]:
            per_minute[(row["source"]["ip"], int((row["time"] - T0) // 60))].add(row["llm"]["prompt_hash"])
            shapes[row["source"]["ip"]].add(row["llm"]["prompt_shape"])
    most = {ip: max(len(v) for (a, _), v in per_minute.items() if a == ip) for ip, _ in per_minute}
    first_minutes = max(len(per_minute[("10.2.0.16", m)]) for m in range(3))
    assert len(shapes["10.2.0.13"]) == 1 and len(shapes["10.2.0.16"]) == 1 and len(shapes["198.51.100.7"]) == 3
    assert 15 <= most["10.2.0.13"] <= 31 and most["10.2.0.16"] >= 190 and first_minutes < 100 and most["10.2.0.14"] == 3
    assert max(most[ip] for ip in ("10.2.0.11", "10.2.0.12", "10.3.0.21", "10.3.0.22", "10.3.0.23")) < 15


def _phases(rate: int, seconds: int, overrides: dict[str, dict[str, Any]] | None = None) -> list[float]:
    """Seconds from a new key's first probe to its model-extraction detection, one start phase every 6 s of a window
    (inf: never caught in ``seconds`` of probing at ``rate`` a minute); the model-extraction rules only."""
    names = [n for n in ("model-extraction", "model-extraction-new-actor") if (overrides or {}).get(n, {}).get("status") != "disabled"]
    out = []
    for offset in range(0, 60, 6):
        summarizer, rows = Summarizer(), []  # type: ignore[var-annotated]
        client, rng, start = Client("198.51.100.7", "sk-new-signup", summarizer, rows), random.Random(offset), 300 + offset
        for k in range(rate * seconds // 60):
            client.ask(start + 60 * k / rate, probe(rng, k))
        proc = BatchProcessor(ProcessorConfig(), build_detectors(names, SHIPPED_RULES, overrides), build_enrichers(["agents"]))
        out.append(min((d.evidence_time - T0 - start for d in run(rows, proc)), default=float("inf")))
    return out


@pytest.mark.parametrize(("rate", "within"), [(100, 120), (300, 40)])
def test_a_new_key_is_caught_whatever_the_phase_of_its_first_window(rate: int, within: int) -> None:
    assert max(_phases(rate, within + 10)) < within


def test_one_rule_with_a_baseline_from_the_first_window_would_miss_new_keys() -> None:
    """Why the new-actor rule exists: a key's first window is partial, and its probes in it became the baseline that
    hid the rest (with x10 from the first window, a new key at 200 a minute escaped from some start phases)."""
    single: dict[str, dict[str, Any]] = {"model-extraction": {"learn_windows": 0}, "model-extraction-new-actor": {"status": "disabled"}}
    assert sum(d == float("inf") for d in _phases(200, 150, single)) >= 2
