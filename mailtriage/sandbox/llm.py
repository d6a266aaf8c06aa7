"""A local OpenAI-compatible chat server for tests, demos and benchmarks.

`SandboxLLM` runs a Starlette app under uvicorn on 127.0.0.1 (free port) in a background
thread and serves `POST /v1/chat/completions` and `GET /v1/models` in OpenAI's wire
format: completion ids, `choices[].message`, `finish_reason`, `usage`, and
`logprobs.content[].{token,logprob,bytes,top_logprobs}`. A policy decides the answer;
the server honours `response_format` (json_schema with its enum, json_object, text) and
tokenises the answer into small tokens so that logprobs can be read like a real model's.

Faults can be switched on at run time from any thread (latency, 429 with retry-after,
500, hang, malformed JSON, a response format or logprobs refused with HTTP 400 in OpenAI's
shape or with HTTP 500 in llama-cpp-python's, 401 on a wrong key). Requests are recorded
in memory for tests and never logged.

Like llama.cpp servers, it also honours `{"type": "json_object", "schema": {...}}` (its
enum constrains the answer, as their grammar does) and, with `slots=N`, answers `GET /props`
with `total_slots` (llama.cpp tools/server/README.md, "GET /props").

    with SandboxLLM() as llm:
        client = openai.OpenAI(base_url=llm.base_url, api_key="sk-local")
        llm.faults.throttle(1, retry_after_s=0.05)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailtriage.sandbox.server import Running, ThreadedServer

__all__ = [
    "DEFAULT_MODEL",
    "Faults",
    "ParsedRequest",
    "Policy",
    "RecordedRequest",
    "SandboxLLM",
    "count_tokens",
    "keyword_policy",
    "tokenize",
]

DEFAULT_MODEL = "sandbox-triage-1"
# Chat formatting overhead per message and for the reply primer, as in OpenAI's cookbook.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMER = 3
# Letters, digits in groups of three, punctuation runs, whitespace runs; a single leading
# space sticks to what follows, as in GPT BPE vocabularies.
_TOKEN_RE = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\w\s]+|\s+|.", re.DOTALL)
_WHOLE = 9  # words up to this length are one token
_CHUNK = 6  # longer ones are cut into pieces of this length


def tokenize(text: str) -> list[str]:
    """Split text into BPE-like tokens; concatenating them gives back `text`.

    Words of up to 9 letters are one token, longer words are cut into 6-letter pieces,
    digits go by three, punctuation and whitespace runs are one token each. Calibrated on
    the bench sample (French, English, German e-mails and the system prompt) against
    GPT-4o's o200k_base: median ratio 1.06, 80% of texts within 0.95-1.15.
    """
    out: list[str] = []
    for match in _TOKEN_RE.finditer(text):
        piece = match.group(0)
        space = 1 if piece.startswith(" ") and len(piece) > 1 else 0
        if len(piece) - space <= _WHOLE:
            out.append(piece)
            continue
        head = space + _CHUNK
        out.append(piece[:head])
        out.extend(piece[i : i + _CHUNK] for i in range(head, len(piece), _CHUNK))
    return out


def count_tokens(text: str) -> int:
    """Tokens in `text` by the sandbox estimate."""
    return len(tokenize(text))


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What a policy sees: the prompts and the allowed keys (None without a schema)."""

    model: str
    system: str
    user: str
    allowed: tuple[str, ...] | None
    response_format: str  # "json_schema" | "json_object_schema" | "json_object" | "text"


# A policy returns (category, confidence in [0, 1], reason).
Policy = Callable[[ParsedRequest], tuple[str, float, str]]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    body: Any
    authorization: str | None
    status: int
    received_at: float


# ------------------------------------------------------------------------------------------
# Default policy: keyword rules in French and English.

KEYWORDS: dict[str, tuple[str, ...]] = {
    "rh": (
        "candidature",
        "cv",
        "curriculum",
        "lettre de motivation",
        "stage",
        "alternance",
        "arrêt de travail",
        "arrêt maladie",
        "congé",
        "congés",
        "bulletin de salaire",
        "paie",
        "recrutement",
        "poste",
        "embauche",
        "attestation employeur",
        "application",
        "resume",
        "job",
        "position",
        "internship",
        "sick",
        "payroll",
        "leave request",
        "hiring",
        "human resources",
        "vacancy",
    ),
    "fournisseurs": (
        "facture",
        "fournisseur",
        "règlement",
        "échéance",
        "avis d'expédition",
        "bon de livraison",
        "grille tarifaire",
        "tarifs",
        "relance de paiement",
        "avoir",
        "invoice",
        "supplier",
        "vendor",
        "payment reminder",
        "price list",
        "delivery note",
        "remittance",
        "purchase order",
        "billing",
    ),
    "clients": (
        "ma commande",
        "commande n",
        "colis",
        "pas arrivé",
        "pas reçu",
        "retour",
        "rembourse",
        "remboursement",
        "réclamation",
        "défectueux",
        "abîmé",
        "déçu",
        "mécontent",
        "my order",
        "order number",
        "not received",
        "refund",
        "return",
        "complaint",
        "broken",
        "damaged",
        "disappointed",
        "defective",
        "exchange",
        "cancel my order",
    ),
    "devis": (
        "devis",
        "demande de prix",
        "tarif pour",
        "catalogue",
        "rendez-vous commercial",
        "proposition commerciale",
        "combien coûte",
        "quote",
        "quotation",
        "pricing",
        "estimate",
        "how much",
        "request for proposal",
        "rfq",
        "sales meeting",
    ),
    "publicite": (
        "newsletter",
        "promotion",
        "promo",
        "offre spéciale",
        "réduction",
        "webinaire",
        "webinar",
        "désinscrire",
        "se désabonner",
        "unsubscribe",
        "soldes",
        "-20%",
        "-30%",
        "-50%",
        "black friday",
        "exclusive offer",
        "discount",
        "free trial",
        "marketing",
        "limited time",
    ),
}
FALLBACK_KEY = "review"


def _email_text(user: str) -> str:
    """The e-mail part of the user message when it is a JSON-field block, else all of it."""
    values: list[str] = []
    for line in user.splitlines():
        key, sep, value = line.partition(": ")
        if not sep or not key.startswith('"'):
            continue
        try:
            decoded = json.loads(value)
        except ValueError:
            continue
        if isinstance(decoded, str):
            values.append(decoded)
        elif isinstance(decoded, list):
            values.extend(str(v) for v in decoded)
    return "\n".join(values) if values else user


_KEYWORD_RES = {
    key: re.compile(
        r"(?<!\w)(?:"
        + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        + r")(?!\w)",
        re.IGNORECASE,
    )
    for key, words in KEYWORDS.items()
}


def _score(text: str, key: str) -> int:
    """How many distinct keywords of `key` occur in `text`."""
    return len({m.group(0).lower() for m in _KEYWORD_RES[key].finditer(text)})


def keyword_policy(request: ParsedRequest) -> tuple[str, float, str]:
    """Pick the allowed key whose French/English keywords match the e-mail best.

    Confidence grows with the margin over the runner-up; no match means the review key
    (or the last allowed key when review is not offered).
    """
    text = _email_text(request.user)
    allowed = request.allowed or (*KEYWORDS, FALLBACK_KEY)
    scores = {k: _score(text, k) for k in allowed if k in KEYWORDS}
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    fallback = FALLBACK_KEY if FALLBACK_KEY in allowed else allowed[-1]
    if not ranked or ranked[0][1] == 0:
        return fallback, 0.6, "no department keyword found"
    best, top = ranked[0]
    runner = ranked[1][1] if len(ranked) > 1 else 0
    confidence = min(0.97, 0.55 + 0.4 * (top - runner) / (top + 1))
    return best, round(confidence, 3), f"{top} keyword(s) of {best} matched"


# ------------------------------------------------------------------------------------------
# Faults


@dataclass
class Faults:
    """Fault switches, safe to change from the test thread while the server runs.

    Counters (`throttle`, `fail`, `hang`, `malform`, `refuse`) apply to the next N chat
    completion requests; flags stay until reset.
    """

    latency_s: float = 0.0
    throttle_next: int = 0
    retry_after_s: float | None = None
    retry_after_ms: int | None = None
    fail_next: int = 0
    fail_status: int = 500
    hang_next: int = 0
    hang_s: float = 30.0
    malform_next: int = 0
    refuse_next: int = 0
    reject_formats: frozenset[str] = frozenset()
    reject_status: int = 400
    reject_logprobs: bool = False
    reject_params: frozenset[str] = frozenset()
    enforce_schema: bool = True
    api_key: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self.latency_s = seconds

    def throttle(
        self, n: int = 1, *, retry_after_s: float | None = 0.05, retry_after_ms: int | None = None
    ) -> None:
        """Answer the next `n` requests with 429 and these retry headers."""
        with self._lock:
            self.throttle_next = n
            self.retry_after_s = retry_after_s
            self.retry_after_ms = retry_after_ms

    def fail(self, n: int = 1, *, status: int = 500) -> None:
        with self._lock:
            self.fail_next, self.fail_status = n, status

    def hang(self, n: int = 1, *, seconds: float = 30.0) -> None:
        """Hold the next `n` requests for `seconds` (past the client's timeout)."""
        with self._lock:
            self.hang_next, self.hang_s = n, seconds

    def malform(self, n: int = 1) -> None:
        """Answer the next `n` requests with content that is not JSON at all."""
        with self._lock:
            self.malform_next = n

    def refuse(self, n: int = 1) -> None:
        """Answer the next `n` requests with `message.refusal` set (safety refusal)."""
        with self._lock:
            self.refuse_next = n

    def reject_response_formats(self, *formats: str, status: int = 400) -> None:
        """Refuse these response formats ("json_schema", "json_object_schema",
        "json_object"; refusing json_object refuses it with a schema too). 400 answers as
        OpenAI does; 500 as llama-cpp-python does for json_schema."""
        with self._lock:
            self.reject_formats = frozenset(formats)
            self.reject_status = status

    def reject_parameters(self, *names: str) -> None:
        """Reject requests carrying these body fields with 400 `unsupported_parameter`
        (as OpenAI does for `max_tokens` or `temperature` on reasoning models)."""
        with self._lock:
            self.reject_params = frozenset(names)

    def set_reject_logprobs(self, value: bool = True) -> None:
        with self._lock:
            self.reject_logprobs = value

    def set_enforce_schema(self, value: bool) -> None:
        """False: accept json_schema without enforcing its enum (like Ollama Cloud)."""
        with self._lock:
            self.enforce_schema = value

    def require_api_key(self, key: str | None) -> None:
        with self._lock:
            self.api_key = key

    def take(self, name: str) -> bool:
        """Consume one unit of counter `name`; True when the fault applies to this call."""
        with self._lock:
            left: int = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_s": self.latency_s,
                "retry_after_s": self.retry_after_s,
                "retry_after_ms": self.retry_after_ms,
                "fail_status": self.fail_status,
                "hang_s": self.hang_s,
                "reject_formats": self.reject_formats,
                "reject_status": self.reject_status,
                "reject_logprobs": self.reject_logprobs,
                "reject_params": self.reject_params,
                "enforce_schema": self.enforce_schema,
                "api_key": self.api_key,
            }


def _error(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _format_name(response_format: dict[str, Any] | None) -> str:
    """The rung a request asks for: json_object with a `schema` is llama.cpp's form."""
    fmt = (response_format or {}).get("type", "text")
    if fmt == "json_object" and isinstance((response_format or {}).get("schema"), dict):
        return "json_object_schema"
    return str(fmt)


def _format_refusal(fmt: str, status: int) -> JSONResponse:
    if status == 500:
        # llama-cpp-python wraps request validation errors in a 500 (server/errors.py).
        message = (
            "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
            f"'response_format', 'type'), 'msg': \"Input should be 'text' or "
            f"'json_object'\", 'input': '{fmt}'}}"
        )
        return _error(500, message, "internal_server_error")
    return _error(
        status,
        f"Invalid parameter: 'response_format' of type '{fmt}' is not supported with this model.",
        "invalid_request_error",
        param="response_format",
    )


def _schema_enum(response_format: dict[str, Any]) -> tuple[str, ...] | None:
    schema = response_format.get("schema") or (response_format.get("json_schema") or {}).get(
        "schema"
    )
    schema = schema if isinstance(schema, dict) else {}
    enum = ((schema.get("properties") or {}).get("category") or {}).get("enum")
    if isinstance(enum, list) and enum and all(isinstance(x, str) for x in enum):
        return tuple(enum)
    return None


# ------------------------------------------------------------------------------------------
# Server


class SandboxLLM(Running):
    """The OpenAI-compatible sandbox server; use as a context manager."""

    def __init__(
        self,
        policy: Policy = keyword_policy,
        *,
        model: str = DEFAULT_MODEL,
        host: str = "127.0.0.1",
        port: int = 0,
        slots: int | None = None,
    ) -> None:
        self.policy = policy
        self.model = model
        self.slots = slots  # reported at GET /props like llama.cpp's --parallel, when set
        self.host = host
        self.faults = Faults()
        self._records: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        self._closing = threading.Event()
        self._server: ThreadedServer | None = None
        self.port = port  # 0: a free port, known once started
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/props", self._props, methods=["GET"]),
            ]
        )

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> SandboxLLM:
        self._server = ThreadedServer(self.app, self.host, port=self.port, name="sandbox-llm")
        self._server.start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.stop()

    # -- records ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    @property
    def request_count(self) -> int:
        return len(self.chat_requests())

    def bodies(self) -> list[Any]:
        return [r.body for r in self.chat_requests()]

    def reset(self) -> None:
        """Forget recorded requests, the in-flight peak, and every fault."""
        with self._lock:
            self._records.clear()
            self.max_in_flight = 0
        self.faults = Faults()

    def _record(self, request: Request, body: Any, status: int) -> None:
        rec = RecordedRequest(
            method=request.method,
            path=request.url.path,
            body=body,
            authorization=request.headers.get("authorization"),
            status=status,
            received_at=time.monotonic(),
        )
        with self._lock:
            self._records.append(rec)

    # -- handlers ---------------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        self._record(request, None, 200)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "created": 1_700_000_000,
                        "owned_by": "mailtriage-sandbox",
                    }
                ],
            }
        )

    async def _props(self, request: Request) -> Response:
        """llama.cpp's server properties, of which only `total_slots` is emulated."""
        self._record(request, None, 200 if self.slots else 404)
        if not self.slots:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse({"total_slots": self.slots, "model_path": self.model})

    async def _chat(self, request: Request) -> Response:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            response = await self._answer(request, body)
            self._record(request, body, response.status_code)
            return response
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(self, request: Request, body: Any) -> Response:
        faults = self.faults
        settings = faults.snapshot()
        if settings["latency_s"]:
            await asyncio.sleep(settings["latency_s"])
        if settings["api_key"] is not None:
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {settings['api_key']}":
                return _error(
                    401,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    code="invalid_api_key",
                )
        if faults.take("throttle_next"):
            headers = {}
            if settings["retry_after_s"] is not None:
                headers["retry-after"] = f"{settings['retry_after_s']:g}"
            if settings["retry_after_ms"] is not None:
                headers["retry-after-ms"] = str(settings["retry_after_ms"])
            return _error(
                429,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if faults.take("fail_next"):
            return _error(
                settings["fail_status"],
                "The server had an error while processing your request.",
                "server_error",
            )
        if faults.take("hang_next"):
            await self._hang(request, settings["hang_s"])
        problem = self._validate(body)
        if problem is not None:
            return problem
        fmt = _format_name(body.get("response_format"))
        refused = settings["reject_formats"]
        if fmt in refused or (fmt == "json_object_schema" and "json_object" in refused):
            return _format_refusal(fmt, settings["reject_status"])
        for name in sorted(settings["reject_params"] & body.keys()):
            return _error(
                400,
                f"Unsupported parameter: '{name}' is not supported with this model.",
                "invalid_request_error",
                param=name,
                code="unsupported_parameter",
            )
        wants_logprobs = bool(body.get("logprobs"))
        if wants_logprobs and settings["reject_logprobs"]:
            return _error(
                400,
                "This model does not support logprobs.",
                "invalid_request_error",
                param="logprobs",
            )
        return JSONResponse(self._completion(body, fmt, settings["enforce_schema"]))

    async def _hang(self, request: Request, seconds: float) -> None:
        """Hold the request until `seconds` pass, the client goes away or the server stops."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._closing.is_set():
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.02)

    @staticmethod
    def _validate(body: Any) -> Response | None:
        if not isinstance(body, dict):
            return _error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        if not body.get("model"):
            return _error(
                400, "you must provide a model parameter", "invalid_request_error", param="model"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(
                400,
                "'messages' must contain at least one message.",
                "invalid_request_error",
                param="messages",
            )
        if body.get("stream"):
            return _error(
                400,
                "stream is not supported by the sandbox.",
                "invalid_request_error",
                param="stream",
            )
        fmt = body.get("response_format")
        if fmt is not None and (
            not isinstance(fmt, dict)
            or fmt.get("type") not in {"text", "json_object", "json_schema"}
        ):
            return _error(
                400,
                "Invalid value for 'response_format'.",
                "invalid_request_error",
                param="response_format",
            )
        top = body.get("top_logprobs")
        if top is not None and (not isinstance(top, int) or not 0 <= top <= 20):
            return _error(
                400,
                "'top_logprobs' must be between 0 and 20.",
                "invalid_request_error",
                param="top_logprobs",
            )
        return None

    def _parse(self, body: dict[str, Any], fmt: str) -> ParsedRequest:
        system, user = [], ""
        for message in body["messages"]:
            role = message.get("role")
            if role in {"system", "developer"}:
                system.append(_text_of(message.get("content")))
            elif role == "user":
                user = _text_of(message.get("content"))  # the last user turn is the e-mail
        constrained = fmt in ("json_schema", "json_object_schema")
        allowed = _schema_enum(body["response_format"]) if constrained else None
        return ParsedRequest(
            model=body["model"],
            system="\n".join(system),
            user=user,
            allowed=allowed,
            response_format=fmt,
        )

    def _completion(self, body: dict[str, Any], fmt: str, enforce: bool) -> dict[str, Any]:
        parsed = self._parse(body, fmt)
        category, confidence, reason = self.policy(parsed)
        confidence = min(1.0, max(1e-6, float(confidence)))
        if enforce and parsed.allowed and category not in parsed.allowed:
            # Constrained decoding cannot spell a key outside the enum.
            category = FALLBACK_KEY if FALLBACK_KEY in parsed.allowed else parsed.allowed[0]
            confidence = min(confidence, 0.3)
        refusal: str | None = None
        if self.faults.take("refuse_next"):
            content, refusal = None, "I'm sorry, I can't help with that request."
        elif self.faults.take("malform_next"):
            content = "Sure! Here is my analysis of the message >>> {{not json"
        elif fmt == "text":
            content = f"Category: {category}\nConfidence: {confidence:.2f}\nReason: {reason}"
        else:
            content = json.dumps(
                {"category": category, "confidence": round(confidence, 2), "reason": reason},
                ensure_ascii=False,
            )
        tokens = tokenize(content or refusal or "")
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "logprobs": None,
            "finish_reason": "stop",
        }
        if body.get("logprobs") and content is not None:
            choice["logprobs"] = {
                "content": _logprobs(
                    tokens,
                    content,
                    category,
                    confidence,
                    parsed.allowed or (),
                    int(body.get("top_logprobs") or 0),
                ),
                "refusal": None,
            }
        prompt_tokens = (
            sum(
                TOKENS_PER_MESSAGE + count_tokens(_text_of(m.get("content")))
                for m in body["messages"]
            )
            + TOKENS_REPLY_PRIMER
        )
        completion_tokens = len(tokens)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_sandbox",
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


# Structural tokens are near-certain; this is their logprob.
_STRUCTURAL_LOGPROB = -0.0001
_VALUE_ANCHOR = re.compile(r'"category"\s*:\s*"|Category:\s*')


def _logprobs(
    tokens: list[str],
    content: str,
    category: str,
    confidence: float,
    alternatives: Sequence[str],
    top_n: int,
) -> list[dict[str, Any]]:
    """Per-token logprobs: the category value's first token carries ln(confidence), its
    other tokens ln(1) (the rest is forced once the value started), so exp(sum) over the
    value's tokens is the policy's confidence."""
    anchor = _VALUE_ANCHOR.search(content)
    start = content.find(category, anchor.end() if anchor else 0)
    end = start + len(category) if start >= 0 else -1
    others = [a for a in alternatives if a != category]
    out, pos = [], 0
    for token in tokens:
        token_start, pos = pos, pos + len(token)
        in_value = start >= 0 and token_start < end and pos > start
        if in_value and token_start <= start:
            logprob = math.log(confidence)
            tops = [(token, logprob)]
            rest = (1.0 - confidence) / max(1, len(others))
            for alt in others:
                if rest > 0:
                    tops.append((tokenize(alt)[0], math.log(rest)))
        elif in_value:
            logprob = 0.0
            tops = [(token, logprob)]
        else:
            logprob = _STRUCTURAL_LOGPROB
            tops = [(token, logprob)]
        out.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode("utf-8")),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}
                    for t, lp in tops[:top_n]
                ],
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the sandbox until interrupted: `python -m mailtriage.sandbox.llm --port 8089`."""
    import argparse

    parser = argparse.ArgumentParser(description="OpenAI-compatible sandbox chat server")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    with SandboxLLM(model=args.model, port=args.port) as llm:
        print(f"sandbox LLM at {llm.base_url} (model {llm.model}); Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
