"""The sandbox OpenAI-compatible server: wire format, response formats, logprobs, faults.

Checked both with raw HTTP (the JSON shapes) and with the real `openai` client (that the
SDK parses what the sandbox sends).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from mailtriage.sandbox.llm import (
    ParsedRequest,
    SandboxLLM,
    count_tokens,
    keyword_policy,
    tokenize,
)

KEYS = ["rh", "fournisseurs", "clients", "devis", "publicite", "review"]


def schema_format(keys: list[str]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "decision",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "category": {"type": "string", "enum": keys},
                    "confidence": {"type": "number"},
                    "reason": {"type": "string"},
                },
                "required": ["category", "confidence", "reason"],
                "additionalProperties": False,
            },
        },
    }


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "sandbox-triage-1",
        "messages": [
            {"role": "system", "content": "Classify the e-mail."},
            {"role": "user", "content": text},
        ],
        **extra,
    }


@pytest.fixture
def http(llm: SandboxLLM) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llm.base_url, timeout=5) as client:
        yield client


def test_models_endpoint(http: httpx.Client) -> None:
    body = http.get("/models").json()
    assert body["object"] == "list"
    assert body["data"][0] == {
        "id": "sandbox-triage-1",
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "mailtriage-sandbox",
    }


def test_openai_client_lists_models(llm: SandboxLLM) -> None:
    with openai.OpenAI(base_url=llm.base_url, api_key="sk-local", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["sandbox-triage-1"]


def test_chat_completion_wire_shape(http: httpx.Client) -> None:
    response = http.post("/chat/completions", json=chat("Voici notre facture n°3"))
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == "sandbox-triage-1"
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    assert choice["logprobs"] is None
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] >= count_tokens("Voici notre facture n°3")


def test_json_schema_answer_conforms_and_respects_enum(http: httpx.Client) -> None:
    keys = ["clients", "devis", "review"]
    body = http.post(
        "/chat/completions", json=chat("Voici notre facture", response_format=schema_format(keys))
    ).json()
    answer = json.loads(body["choices"][0]["message"]["content"])
    assert set(answer) == {"category", "confidence", "reason"}
    assert answer["category"] in keys  # "fournisseurs" would match but is not offered
    assert 0 <= answer["confidence"] <= 1 and isinstance(answer["reason"], str)


def test_json_object_and_text_formats(http: httpx.Client) -> None:
    as_json = http.post(
        "/chat/completions",
        json=chat("Join our free webinar", response_format={"type": "json_object"}),
    ).json()
    assert json.loads(as_json["choices"][0]["message"]["content"])["category"] == "publicite"
    as_text = http.post("/chat/completions", json=chat("Join our free webinar")).json()
    content = as_text["choices"][0]["message"]["content"]
    assert content.startswith("Category: publicite\n")


def test_logprobs_spell_the_answer_and_carry_the_confidence(llm: SandboxLLM) -> None:
    llm.policy = lambda request: ("fournisseurs", 0.62, "invoice")
    client = openai.OpenAI(base_url=llm.base_url, api_key="sk-local", max_retries=0)
    completion = client.chat.completions.create(
        model="sandbox-triage-1",
        messages=[{"role": "user", "content": "facture"}],
        response_format=schema_format(KEYS),  # type: ignore[arg-type]
        logprobs=True,
        top_logprobs=3,
    )
    client.close()
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    content = choice.message.content or ""
    assert "".join(e.token for e in entries) == content
    for entry in entries:
        assert bytes(entry.bytes or []) == entry.token.encode()
        assert 1 <= len(entry.top_logprobs) <= 3
        assert len(entry.token.strip()) <= 9  # small tokens
    start = content.index('"fournisseurs"') + 1
    end = start + len("fournisseurs")
    pos, value_logprob, value_tokens = 0, 0.0, 0
    for entry in entries:
        if pos < end and pos + len(entry.token) > start:
            value_logprob += entry.logprob
            value_tokens += 1
        pos += len(entry.token)
    assert value_tokens >= 2  # the key spans several tokens
    assert math.exp(value_logprob) == pytest.approx(0.62)
    first = next(e for e in entries if e.token == "fourni")
    assert [t.token for t in first.top_logprobs][1:] == ["rh", "clients"]


def test_json_schema_rejection_uses_openai_error_shape(llm: SandboxLLM, http: httpx.Client) -> None:
    llm.faults.reject_response_formats("json_schema")
    response = http.post("/chat/completions", json=chat("x", response_format=schema_format(KEYS)))
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == "response_format"
    # json_object is still accepted
    ok = http.post("/chat/completions", json=chat("x", response_format={"type": "json_object"}))
    assert ok.status_code == 200


def test_json_schema_refused_with_500_like_llama_cpp_python(
    llm: SandboxLLM, http: httpx.Client
) -> None:
    """The shape llama-cpp-python 0.3.36 answered in tests/test_llm_real_server.py: its
    route handler turns the request validation error into a 500 (server/errors.py)."""
    llm.faults.reject_response_formats("json_schema", status=500)
    response = http.post("/chat/completions", json=chat("x", response_format=schema_format(KEYS)))
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "internal_server_error" and error["param"] is None
    assert "'response_format', 'type'" in error["message"]
    assert "Input should be 'text' or 'json_object'" in error["message"]


def test_json_object_with_a_schema_is_constrained_like_llama_cpp(
    llm: SandboxLLM, http: httpx.Client
) -> None:
    llm.policy = lambda request: ("urgent_ceo", 0.9, "not a key")
    schema = schema_format(["clients", "review"])["json_schema"]["schema"]
    fmt = {"type": "json_object", "schema": schema}
    response = http.post("/chat/completions", json=chat("x", response_format=fmt))
    answer = json.loads(response.json()["choices"][0]["message"]["content"])
    assert answer["category"] == "review"  # the grammar cannot spell another key
    # Refusing json_object refuses it with a schema too.
    llm.faults.reject_response_formats("json_object")
    refused = http.post("/chat/completions", json=chat("x", response_format=fmt))
    assert refused.status_code == 400


def test_props_reports_slots_only_when_configured(http: httpx.Client) -> None:
    root = str(http.base_url).removesuffix("/v1/")
    assert httpx.get(root + "/props").status_code == 404
    with SandboxLLM(slots=3) as server:
        props = httpx.get(server.base_url.removesuffix("/v1") + "/props").json()
        assert props["total_slots"] == 3


def test_logprobs_rejection(llm: SandboxLLM, http: httpx.Client) -> None:
    llm.faults.set_reject_logprobs(True)
    response = http.post("/chat/completions", json=chat("x", logprobs=True))
    assert response.status_code == 400 and response.json()["error"]["param"] == "logprobs"
    assert http.post("/chat/completions", json=chat("x")).status_code == 200


def test_throttle_and_fail_counters(llm: SandboxLLM, http: httpx.Client) -> None:
    llm.faults.throttle(1, retry_after_s=2, retry_after_ms=1500)
    throttled = http.post("/chat/completions", json=chat("x"))
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
    assert throttled.headers["retry-after-ms"] == "1500"
    assert throttled.json()["error"]["code"] == "rate_limit_exceeded"
    llm.faults.fail(1)
    failed = http.post("/chat/completions", json=chat("x"))
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
    assert http.post("/chat/completions", json=chat("x")).status_code == 200
    assert [r.status for r in llm.chat_requests()] == [429, 500, 200]


def test_api_key_check(llm: SandboxLLM, http: httpx.Client) -> None:
    llm.faults.require_api_key("sk-good")
    denied = http.post("/chat/completions", json=chat("x"))
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    allowed = http.post(
        "/chat/completions", json=chat("x"), headers={"authorization": "Bearer sk-good"}
    )
    assert allowed.status_code == 200


def test_malformed_and_refusal(llm: SandboxLLM, http: httpx.Client) -> None:
    llm.faults.malform(1)
    content = http.post("/chat/completions", json=chat("x")).json()["choices"][0]["message"]
    with pytest.raises(ValueError):
        json.loads(content["content"])
    llm.faults.refuse(1)
    message = http.post("/chat/completions", json=chat("x")).json()["choices"][0]["message"]
    assert message["content"] is None and message["refusal"]


def test_hang_is_cut_by_client_timeout(llm: SandboxLLM, http: httpx.Client) -> None:
    llm.faults.hang(1, seconds=5)
    with pytest.raises(httpx.ReadTimeout):
        http.post("/chat/completions", json=chat("x"), timeout=0.2)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 50},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": "x"},
    ],
)
def test_invalid_requests_get_400(http: httpx.Client, body: dict[str, Any]) -> None:
    response = http.post("/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_records_requests_and_resets(llm: SandboxLLM, http: httpx.Client) -> None:
    http.post("/chat/completions", json=chat("un"))
    http.post("/chat/completions", json=chat("deux"))
    assert llm.request_count == 2
    assert [b["messages"][1]["content"] for b in llm.bodies()] == ["un", "deux"]
    llm.reset()
    assert llm.request_count == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Candidature au poste de technicien, CV en pièce jointe", "rh"),
        ("Application for the sales assistant position, resume attached", "rh"),
        ("Veuillez trouver ci-joint notre facture à régler", "fournisseurs"),
        ("Our new price list for 2025 is attached", "fournisseurs"),
        ("Ma commande n°4512 n'est toujours pas arrivée, colis pas reçu", "clients"),
        ("I want a refund, the product is broken", "clients"),
        ("Pourriez-vous nous faire un devis pour 200 pièces ?", "devis"),
        ("We would like a quotation for a maintenance contract", "devis"),
        ("Newsletter de novembre : -20% sur toute la gamme", "publicite"),
        ("Join our free webinar on AI", "publicite"),
        ("Bonjour, nous nous sommes vus au salon", "review"),
    ],
)
def test_keyword_policy(text: str, expected: str) -> None:
    request = ParsedRequest("m", "", text, tuple(KEYS), "json_schema")
    category, confidence, reason = keyword_policy(request)
    assert category == expected and 0 < confidence < 1 and reason


def test_keyword_policy_picks_only_among_allowed() -> None:
    request = ParsedRequest("m", "", "Votre facture", ("clients", "devis"), "json_schema")
    assert keyword_policy(request)[0] in {"clients", "devis"}


def test_keyword_policy_reads_the_escaped_email_block() -> None:
    user = '<email>\n"subject": "Candidature"\n"text": "Mon CV \\u003cjoint\\u003e"\n</email>'
    request = ParsedRequest("m", "", user, tuple(KEYS), "json_schema")
    assert keyword_policy(request)[0] == "rh"


def test_tokenize_round_trips_and_stays_small() -> None:
    text = 'Bonjour,\n\n{"category": "fournisseurs"} — réclamation n°12  ! key_a_b __x\t\r'
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert max(len(t.strip()) for t in tokens) <= 9
    assert tokenize("fournisseurs") == ["fourni", "sseurs"]
    assert tokenize(" réclamation n°12") == [" réclam", "ation", " n", "°", "12"]
    assert count_tokens(text) == len(tokens)
