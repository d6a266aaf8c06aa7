"""The LLM path against a real llama.cpp server: llama-cpp-python with Gemma 3 270M.

What is checked is the protocol, not the model's judgement (a 270M base model): which
request shapes the server accepts or refuses, grammar-constrained output, logprobs,
time-outs, the prefix cache, and the commands end to end. Answers are kept short
(`max_output_tokens`): llama-cpp-python computes logprobs in Python over Gemma's 262k-token
vocabulary, about a second per generated token on this machine.

The session fixture `llama_server` starts the server once; these tests skip with the
reason when it cannot run here, and fail instead under CI.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from mailtriage.cli import app
from mailtriage.core.config import Settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.errors import ClassifierError
from mailtriage.core.ladder import LadderMemory, Rung
from mailtriage.core.llm import LLMClassifier
from mailtriage.core.message import Address, Message
from mailtriage.core.prompt import build_messages
from mailtriage.sandbox.llama_server import LlamaServer
from mailtriage.sandbox.process import write_toml
from tests.helpers import example_settings
from tests.test_evaluate import write_csv

KEYS = ["rh", "fournisseurs", "clients", "devis", "publicite", "review"]
BOX = "contact@atelier-dupont.fr"
runner = CliRunner(env={"COLUMNS": "200"})

MAILS = [
    ("Facture F-2024-118", "Veuillez trouver ci-joint notre facture F-2024-118 à régler."),
    ("Candidature spontanée", "Bonjour, je vous envoie mon CV pour le poste de technicien."),
    ("Où est ma commande ?", "Ma commande n°4512 n'est toujours pas arrivée."),
]


def mail(i: int) -> Message:
    subject, text = MAILS[i % len(MAILS)]
    return Message(BOX, f"real-{i}", subject=subject, sender=Address("x@example.org"), text=text)


def real_settings(server: LlamaServer, **llm: Any) -> Settings:
    """The example configuration on the real server: short answers, no retries."""
    fields = {
        "base_url": server.base_url,
        "model": server.model,
        "logprobs": False,
        "few_shot": 0,
        "max_output_tokens": 16,
        "max_retries": 0,
        "timeout_s": 300,
        **llm,
    }
    return example_settings(llm=fields, classifier="llm")


class Recorder:
    """Records (rung asked for, HTTP status or None) of each request the client sends."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self._by_request: dict[int, list[Any]] = {}

    async def _request(self, request: Any) -> None:
        body = json.loads(request.content or b"{}")
        fmt = body.get("response_format") or {"type": "text"}
        row = [fmt["type"] + ("_schema" if "schema" in fmt else ""), None]
        self.sent.append(row)
        self._by_request[id(request)] = row

    async def _response(self, response: Any) -> None:
        self._by_request[id(response.request)][1] = response.status_code

    def client(self, settings: Settings) -> openai.AsyncOpenAI:
        hooks = {"request": [self._request], "response": [self._response]}
        return openai.AsyncOpenAI(
            base_url=settings.llm.base_url,
            api_key="local",
            timeout=settings.llm.timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks=hooks),
        )

    @property
    def pairs(self) -> list[tuple[str, int | None]]:
        return [(name, status) for name, status in self.sent]


async def run(
    settings: Settings, *messages: Message, recorder: Recorder | None = None
) -> tuple[list[Decision | ClassifierError], LLMClassifier]:
    """Classify in order on a fresh ladder; ClassifierErrors are returned, not raised."""
    recorder = recorder or Recorder()
    client = recorder.client(settings)
    classifier = LLMClassifier(settings, client=client, memory=LadderMemory())
    out: list[Decision | ClassifierError] = []
    try:
        for message in messages:
            try:
                out.append(await classifier.classify(message))
            except ClassifierError as exc:
                out.append(exc)
    finally:
        await client.close()
    return out, classifier


# -- the ladder on the real server ---------------------------------------------------------


def test_json_schema_is_refused_with_500_and_the_grammar_rung_answers_with_logprobs(
    llama_server: LlamaServer,
) -> None:
    """What a new user met: llama-cpp-python refuses json_schema with HTTP 500. The ladder
    steps to json_object + schema at once (no retry), the grammar keeps the answer within
    the keys, logprobs give the confidence, and the next message starts there."""
    recorder = Recorder()
    settings = real_settings(llama_server, logprobs=True, max_retries=3, max_output_tokens=10)
    (first, second), classifier = asyncio.run(run(settings, mail(0), mail(1), recorder=recorder))

    assert recorder.pairs == [
        ("json_schema", 500),
        ("json_object_schema", 200),
        ("json_object_schema", 200),
    ]
    for decision in (first, second):
        assert isinstance(decision, Decision), decision
        assert decision.category in KEYS
        assert decision.confidence_source is ConfidenceSource.LOGPROB
        assert 0.0 < decision.confidence <= 1.0
        assert decision.prompt_tokens > 100
    assert classifier.rung is Rung.JSON_OBJECT_SCHEMA
    assert classifier.logprobs_returned is True


@pytest.mark.parametrize("rung", list(Rung))
def test_each_rung_against_the_real_server(llama_server: LlamaServer, rung: Rung) -> None:
    """Forced by `llm.response_format`, each rung's request shape reaches the real server:
    json_schema is refused (500), the others are accepted (200). What the model writes at
    the unconstrained rungs is up to it: a key, review, or an unusable answer that steps
    down and finally fails."""
    recorder = Recorder()
    settings = real_settings(llama_server, response_format=str(rung))
    (outcome,), _ = asyncio.run(run(settings, mail(2), recorder=recorder))

    first_name, first_status = recorder.pairs[0]
    assert first_name == str(rung)
    assert first_status == (500 if rung is Rung.JSON_SCHEMA else 200)
    names = [name for name, _ in recorder.pairs]
    assert names == [str(r) for r in list(Rung)[list(Rung).index(rung) :]][: len(names)]
    assert all(status == 200 for _, status in recorder.pairs[1:])
    if rung in (Rung.JSON_SCHEMA, Rung.JSON_OBJECT_SCHEMA):
        # The grammar spells one of the keys: no step down after the first 200.
        assert isinstance(outcome, Decision) and outcome.category in KEYS
        assert recorder.pairs[-1] == ("json_object_schema", 200)
    elif isinstance(outcome, Decision):
        assert outcome.category in KEYS
    else:
        assert "could not be parsed" in str(outcome) or "empty" in str(outcome)
        assert names[-1] == "text"


def test_unparseable_real_answers_step_down_to_text_then_fail(llama_server: LlamaServer) -> None:
    """One token per answer ("{" under a grammar) parses nowhere: every rung from the
    configured one is asked once, then the message is left for a later attempt."""
    recorder = Recorder()
    settings = real_settings(llama_server, response_format="json_object_schema")
    settings = settings.model_copy(
        update={"llm": settings.llm.model_copy(update={"max_output_tokens": 1})}
    )
    (outcome,), classifier = asyncio.run(run(settings, mail(0), recorder=recorder))
    assert isinstance(outcome, ClassifierError)
    assert "could not be parsed" in str(outcome)
    assert recorder.pairs == [("json_object_schema", 200), ("json_object", 200), ("text", 200)]
    assert classifier.rung is Rung.JSON_OBJECT_SCHEMA  # an answer is no refusal


@pytest.mark.parametrize("rung", list(Rung))
def test_a_real_request_past_the_timeout_fails_fast(llama_server: LlamaServer, rung: Rung) -> None:
    settings = real_settings(
        llama_server, response_format=str(rung), timeout_s=0.05, max_output_tokens=4
    )
    started = time.monotonic()
    (outcome,), _ = asyncio.run(run(settings, mail(1)))
    assert isinstance(outcome, ClassifierError)
    assert "timed out after 0.05 s" in str(outcome)
    assert time.monotonic() - started < 5.0


# -- the prefix cache ------------------------------------------------------------------------


def _count_tokens(server: LlamaServer, text: str) -> int:
    resp = httpx.post(
        server.base_url.removesuffix("/v1") + "/extras/tokenize/count",
        json={"input": text},
        timeout=30,
    )
    resp.raise_for_status()
    return int(resp.json()["count"])


@pytest.mark.parametrize("prompt", ["full", "compact"])
def test_second_message_evaluates_only_the_email(llama_server: LlamaServer, prompt: str) -> None:
    """The system prompt and category block are byte-identical from one message to the
    next and the e-mail comes last, so the server reuses the prefix: on the second
    message it evaluates only the e-mail's tokens (and the chat template's closing ones)."""
    settings = real_settings(llama_server, response_format="json_object_schema", prompt=prompt)
    asyncio.run(run(settings, mail(0)))  # the prefix is in the cache now
    mark = llama_server.log_size()
    (decision,), _ = asyncio.run(run(settings, mail(1)))
    assert isinstance(decision, Decision)  # one request: the grammar's answer parsed
    [line] = llama_server.cache_lines(since=mark)

    categories = settings.categories_for(BOX)
    system, email = build_messages(mail(1), categories, "review", 4000, compact=prompt == "compact")
    system_tokens = _count_tokens(llama_server, system["content"])
    email_tokens = _count_tokens(llama_server, email["content"])
    template_tokens = 16  # "<|im_end|>\n<|im_start|>assistant\n" and the BOS counted above
    assert line.reused >= system_tokens
    assert 0 < line.evaluated <= email_tokens + template_tokens
    assert line.evaluated < line.reused / 3


# -- the commands ----------------------------------------------------------------------------


def _config(tmp_path: Path, server: LlamaServer, **llm: Any) -> Path:
    """A configuration as an admin would write it for a local llama.cpp server: no key."""
    import tomllib

    from mailtriage.data import EXAMPLE_CONFIG

    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["classifier"] = "llm"
    data.pop("mailbox")  # the commands here need no mailbox (and doctor would check them)
    data["state"] = {"url": f"sqlite:///{tmp_path / 'state.sqlite'}"}
    data["llm"] = {
        "base_url": server.base_url,
        "model": server.model,
        "prompt": "compact",
        "logprobs": False,
        "max_output_tokens": 16,
        **llm,
    }
    path = tmp_path / "mailtriage.toml"
    write_toml(path, data)
    return path


def _eml(path: Path, subject: str, text: str) -> Path:
    path.write_text(
        f"From: Someone <someone@example.org>\nTo: {BOX}\nSubject: {subject}\n"
        "Message-ID: <" + path.stem + "@example.org>\nMIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="utf-8"\n\n' + text + "\n",
        encoding="utf-8",
    )
    return path


def test_classify_command_against_the_real_server(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    config = _config(tmp_path, llama_server)
    files = [_eml(tmp_path / f"m{i}.eml", s, t) for i, (s, t) in enumerate(MAILS)]
    result = runner.invoke(app, ["classify", "-c", str(config), "--json", *map(str, files)])
    assert result.exit_code == 0, result.output
    rows, text, decoder = [], result.output.strip(), json.JSONDecoder()
    while text:  # the objects follow each other (pretty-printed)
        row, end = decoder.raw_decode(text)
        rows.append(row)
        text = text[end:].strip()
    assert len(rows) == len(files)
    for row in rows:
        assert row["status"] == "classified", row
        assert row["category"] in KEYS and row["classifier"] == "llm"


def test_eval_command_against_the_real_server(tmp_path: Path, llama_server: LlamaServer) -> None:
    config = _config(tmp_path, llama_server)
    data = write_csv(
        tmp_path / "labelled.csv", [(s, t, k) for (s, t), k in zip(MAILS, KEYS, strict=False)]
    )
    out = tmp_path / "report"
    args = ["eval", str(data), "-c", str(config), "--classifier", "llm", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["n"] == 3 and report["failures"] == 0, report


def test_doctor_reports_the_rung_logprobs_and_latency(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    config = _config(tmp_path, llama_server, logprobs=True, max_output_tokens=10)
    result = runner.invoke(app, ["doctor", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    [row] = [c for c in json.loads(result.stdout)["checks"] if c["subject"].startswith("model")]
    assert row["ok"] and row["check"] == "classifies", row
    text = row["detail"]
    assert text.startswith(llama_server.base_url)
    assert "output format json_object_schema (json_schema refused)" in text
    assert "logprobs returned" in text
    assert "one classification " in text and " ms" in text
    # llama-cpp-python reports no slots: the local default
    assert "concurrency 4 (local default; the server reports no slots)" in text


def test_demo_against_the_real_server_ends_no_message_in_error(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    """`mailtriage demo -c manifest/local-llm.toml` (its port replaced by the session
    server's): every message of both mailboxes is classified by the real server or skipped
    by the rules, none is left failed, and the second pass processes nothing."""
    from mailtriage.core.ledger import Ledger, Status

    manifest = Path(__file__).resolve().parents[1] / "manifest" / "local-llm.toml"
    text = manifest.read_text(encoding="utf-8")
    assert "http://127.0.0.1:8089/v1" in text
    config = tmp_path / "local-llm.toml"
    config.write_text(text.replace("http://127.0.0.1:8089/v1", llama_server.base_url), "utf-8")
    state = tmp_path / "state"
    result = runner.invoke(app, ["demo", "-c", str(config), "--state-dir", str(state)])
    assert result.exit_code == 0, result.output[-3000:]
    assert "classifier: llm" in result.output and "not reachable" not in result.output
    assert "second pass: 0 messages processed" in result.output
    rows = Ledger(f"sqlite:///{state / 'demo.sqlite'}").recent(limit=10_000)
    assert len(rows) > 80
    assert {r.status for r in rows} <= {Status.DONE, Status.SKIPPED}
    classified = [r for r in rows if r.status == Status.DONE]
    assert all(r.category in KEYS for r in classified)
    assert not [r for r in rows if r.last_error], [r.last_error for r in rows if r.last_error]
