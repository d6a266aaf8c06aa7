"""The LLM classifier: one chat completion per message on an OpenAI-compatible endpoint.

Works with OpenAI, Azure OpenAI, Ollama, llama.cpp, vLLM and LM Studio through the `openai`
client. The request walks down the output-format ladder of `core.ladder` (json_schema, then
json_object carrying the schema, then plain json_object, then text): it steps down when
the server refuses the format (HTTP 400, 422 or 500 naming it), and, for this message only,
when the answer cannot be parsed or names no configured key. What a refusal taught is
remembered per endpoint and model. Confidence comes from the logprobs of the category's
tokens when the server returns them, else from the number the model wrote.

Failure policy: a model refusal or content filter, or a key outside the configured ones at
the last rung, goes to the review category; no usable answer at all (timeout, throttling
or server errors after `llm.max_retries` retries, unparseable output at every rung) raises
`ClassifierError`, so the pipeline leaves the message for a later attempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletion

from mailtriage.core.config import Settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.errors import ClassifierError, ConfigError
from mailtriage.core.ladder import (
    ENDPOINTS,
    Attempt,
    LadderMemory,
    Rung,
    refused_feature,
    step_down,
)
from mailtriage.core.message import Address, Message
from mailtriage.core.prompt import (
    SCHEMA_NAME,
    Answer,
    build_messages,
    clean_reason,
    parse_json_answer,
    parse_text_answer,
    response_schema,
    value_span,
)

__all__ = [
    "EndpointReport",
    "ExamplesFor",
    "LLMClassifier",
    "logprob_confidence",
    "probe_endpoint",
    "server_slots",
]

log = logging.getLogger(__name__)

# Few-shot hook: (message) -> [(text excerpt, category key)], sync or async.
ExamplesFor = Callable[[Message], Sequence[tuple[str, str]] | Awaitable[Sequence[tuple[str, str]]]]

# Retries of throttling, server errors and time-outs: exponential backoff with jitter, or
# the server's retry-after(-ms) when it sends one (capped).
RETRY_BASE_S = 0.5
RETRY_MAX_S = 8.0
RETRY_AFTER_MAX_S = 60.0
_RETRY_STATUSES = frozenset({408, 409, 429})


def logprob_confidence(
    tokens: Sequence[tuple[str, float]], content: str, answer: Answer
) -> float | None:
    """exp(sum of logprobs) of the tokens that spell the category value, or None.

    `tokens` are (token text, logprob) in answer order. Their concatenation normally
    equals `content`; when it does not, the value is located again in the joined text.
    """
    if not tokens:
        return None
    joined = "".join(t for t, _ in tokens)
    span = answer.span if joined == content else value_span(joined, answer.category)
    if span is None and joined != content:
        match = re.search(rf"(?<![\w-]){re.escape(answer.category)}(?![\w-])", joined)
        span = match.span() if match else None
    if span is None:
        return None
    start, end = span
    total, pos, found = 0.0, 0, False
    for text, logprob in tokens:
        token_end = pos + len(text)
        if token_end > start and pos < end:
            total += logprob
            found = True
        pos = token_end
        if pos >= end:
            break
    if not found:
        return None
    return min(1.0, max(0.0, math.exp(total)))


def _retry_delay(exc: openai.OpenAIError, retry: int) -> float:
    """Seconds before retry number `retry` (0-based): the server's word, else backoff."""
    # The SDK's response object (its own vendored httpx) has case-insensitive headers.
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        if headers.get("retry-after-ms") is not None:
            return min(RETRY_AFTER_MAX_S, max(0.0, float(headers["retry-after-ms"]) / 1000))
        if headers.get("retry-after") is not None:
            value = headers["retry-after"]
            try:
                seconds = float(value)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                seconds = when.timestamp() - time.time()
            return min(RETRY_AFTER_MAX_S, max(0.0, seconds))
    except (TypeError, ValueError, OverflowError):
        pass
    backoff = min(RETRY_MAX_S, RETRY_BASE_S * 2.0**retry)
    return float(backoff * (1 - 0.25 * random.random()))


def _retryable(exc: openai.OpenAIError) -> bool:
    """Time-outs, lost connections, throttling and server errors are worth another try."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if not isinstance(exc, openai.APIStatusError):
        return False
    should = exc.response.headers.get("x-should-retry")
    if should in ("true", "false"):
        return should == "true"
    return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500


def _failure(exc: openai.OpenAIError, timeout_s: float, tries: int) -> ClassifierError:
    """Translate an SDK error into ClassifierError with a short, secret-free message."""
    after = f" after {tries} tries" if tries > 1 else ""
    if isinstance(exc, openai.APITimeoutError):
        return ClassifierError(f"LLM request timed out after {timeout_s:g} s{after}")
    if isinstance(exc, openai.APIConnectionError):
        return ClassifierError(f"cannot reach the LLM endpoint (connection failed){after}")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ClassifierError(
            f"LLM endpoint refused the credentials (HTTP {exc.status_code}); "
            "check llm.api_key_env / llm.api_key_file"
        )
    if isinstance(exc, openai.RateLimitError):
        return ClassifierError(f"LLM endpoint still throttling (HTTP 429){after}")
    if isinstance(exc, openai.APIStatusError):
        detail = " ".join(str(exc.message).split())[:200]
        return ClassifierError(f"LLM endpoint failed (HTTP {exc.status_code}){after}: {detail}")
    return ClassifierError(f"LLM call failed: {type(exc).__name__}")


@dataclass(frozen=True, slots=True)
class _Unusable:
    """An answer that gave no configured key: `why` says how; `key` is what it named."""

    why: str
    key: str | None = None


class LLMClassifier:
    """Classifies a message with a chat model among the mailbox's configured categories.

    `client` may be injected (tests, shared clients); otherwise one is built from
    `settings.llm` and closed by `aclose()`. Retries are this class's (the client's own are
    turned off), so that a refusal of the format is seen at once. `examples_for` supplies
    few-shot examples (text excerpt, key) for a message, e.g. learned from the ledger.
    `memory` holds what each endpoint accepted (default: shared by the process).
    """

    name = "llm"

    def __init__(
        self,
        settings: Settings,
        *,
        client: openai.AsyncOpenAI | None = None,
        examples_for: ExamplesFor | None = None,
        memory: LadderMemory | None = None,
    ) -> None:
        if not settings.llm.model:
            raise ConfigError("llm.model: empty; set a model name to use the LLM classifier")
        self._settings = settings
        self._llm = settings.llm
        self._owns_client = client is None
        base = client or openai.AsyncOpenAI(
            base_url=settings.llm.base_url,
            api_key=settings.llm.api_key(),
            timeout=settings.llm.timeout_s,
        )
        self._client = base.with_options(max_retries=0)
        self._base_client = base
        self._examples_for = examples_for
        self._memory = ENDPOINTS if memory is None else memory
        self._endpoint = (settings.llm.base_url.rstrip("/"), settings.llm.model)
        start = (
            Rung.JSON_SCHEMA
            if self._llm.response_format == "auto"
            else Rung(self._llm.response_format)
        )
        self._start = Attempt(start, settings.llm.logprobs)
        self._semaphore: asyncio.Semaphore | None = None
        self._sizing = asyncio.Lock()
        self._probing = asyncio.Lock()
        self.concurrency: int = settings.llm.max_concurrency
        # Whether the last answer carried token logprobs (None before the first answer).
        self.logprobs_returned: bool | None = None

    @property
    def attempt(self) -> Attempt:
        """Where the next message starts: the configured rung, or lower after refusals."""
        remembered = self._memory.get(self._endpoint)
        if remembered is None:
            return self._start
        if list(Rung).index(remembered.rung) < list(Rung).index(self._start.rung):
            return replace(remembered, rung=self._start.rung)
        return remembered

    @property
    def rung(self) -> Rung:
        """The rung the next message starts at."""
        return self.attempt.rung

    @property
    def uses_logprobs(self) -> bool:
        return self.attempt.logprobs

    async def aclose(self) -> None:
        if self._owns_client:
            await self._base_client.close()

    async def classify(self, message: Message) -> Decision:
        """Decide a category for `message`; raises ClassifierError when there is no answer."""
        categories = self._settings.categories_for(message.mailbox)
        keys = [c.key for c in categories]
        examples = await self._examples(message)
        messages = build_messages(
            message,
            categories,
            self._settings.review_category,
            self._llm.max_input_chars,
            examples,
            compact=self._llm.prompt == "compact",
        )
        async with await self._slots():
            if self._memory.get(self._endpoint) is None:
                # Until the endpoint answered once, one message probes the ladder and the
                # others wait, so that concurrent first messages pay no refusal twice.
                async with self._probing:
                    if self._memory.get(self._endpoint) is None:
                        return await self._ladder(messages, keys)
            return await self._ladder(messages, keys)

    async def _slots(self) -> asyncio.Semaphore:
        """The in-flight limit, sized once: a local server's reported slots when
        `llm.max_concurrency` is left at its default, else that setting."""
        async with self._sizing:
            if self._semaphore is None:
                if self._llm.is_local and self._llm.concurrency_is_default:
                    slots = await server_slots(self._llm.base_url, self._llm.api_key())
                    if slots is not None:
                        self.concurrency = min(slots, 64)
                self._semaphore = asyncio.Semaphore(self.concurrency)
            return self._semaphore

    async def _examples(self, message: Message) -> list[tuple[str, str]]:
        if self._examples_for is None or self._llm.few_shot == 0:
            return []
        try:
            result = self._examples_for(message)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # a broken hook must not block classification
            log.warning("few-shot examples unavailable: %s", type(exc).__name__)
            return []
        return list(result)[: self._llm.few_shot]

    async def _ladder(self, messages: list[dict[str, str]], keys: list[str]) -> Decision:
        """Ask, stepping down on refusals (remembered) and on unusable answers (this
        message only), until an answer names a key or the last rung gave none."""
        started = time.perf_counter()
        attempt = self.attempt
        remember = True  # refusals teach the memory only on the path from the start rung
        while True:
            completion, attempt = await self._complete(messages, keys, attempt)
            if remember:
                # Remembered once a request worked: a refusal of everything (a prompt over
                # the context size, say) must not demote the endpoint for good.
                self._memory.remember(self._endpoint, attempt)
            latency_ms = (time.perf_counter() - started) * 1000.0
            outcome = self._read(completion, attempt, keys, latency_ms)
            if isinstance(outcome, Decision):
                return outcome
            lower = attempt.rung.looser
            if lower is None:
                if outcome.key is None:
                    raise ClassifierError(f"LLM answer {outcome.why}")
                return self._review(
                    f"model answered {outcome.key!r}, which is not a configured category",
                    completion,
                    latency_ms,
                )
            log.info("LLM answer at %s %s; asking again at %s", attempt.rung, outcome.why, lower)
            attempt = replace(attempt, rung=lower)
            remember = False

    async def _complete(
        self,
        messages: list[dict[str, str]],
        keys: list[str],
        attempt: Attempt,
    ) -> tuple[ChatCompletion, Attempt]:
        """One completion: steps down on refusals, retries what is worth retrying."""
        retries = 0
        while True:
            request = attempt.request(
                model=self._llm.model,
                messages=messages,
                temperature=self._llm.temperature,
                max_tokens=self._llm.max_output_tokens,
                schema_name=SCHEMA_NAME,
                schema=response_schema(keys),
            )
            try:
                completion: ChatCompletion = await self._client.chat.completions.create(**request)
                return completion, attempt
            except openai.APIStatusError as exc:
                feature = refused_feature(exc)
                if feature is not None or exc.status_code in (400, 422):
                    lower = step_down(attempt, feature)
                    if lower is None:
                        raise _failure(exc, self._llm.timeout_s, retries + 1) from exc
                    log.info(
                        "LLM endpoint refused %s (HTTP %s); asking with %s",
                        attempt.describe(),
                        exc.status_code,
                        lower.describe(),
                    )
                    attempt = lower
                    continue
                error: openai.OpenAIError = exc
            except openai.OpenAIError as exc:
                error = exc
            if not _retryable(error) or retries >= self._llm.max_retries:
                raise _failure(error, self._llm.timeout_s, retries + 1) from error
            await asyncio.sleep(_retry_delay(error, retries))
            retries += 1

    def _read(
        self, completion: ChatCompletion, attempt: Attempt, keys: list[str], latency_ms: float
    ) -> Decision | _Unusable:
        """The decision an answer gives, or why it gives none."""
        if not completion.choices:
            raise ClassifierError("LLM answer has no choices")
        choice = completion.choices[0]
        refusal = getattr(choice.message, "refusal", None)
        if refusal:
            reason = f"model refused to classify: {clean_reason(refusal)}"
            return self._review(reason, completion, latency_ms)
        content = choice.message.content or ""
        if not content.strip():
            if choice.finish_reason == "content_filter":
                reason = "answer blocked by the endpoint's content filter"
                return self._review(reason, completion, latency_ms)
            return _Unusable(f"was empty (finish_reason={choice.finish_reason})")
        if attempt.rung is Rung.TEXT:
            answer = parse_text_answer(content, keys)
        else:
            answer = parse_json_answer(content)
        if answer is None:
            return _Unusable(
                f"could not be parsed ({len(content)} characters, "
                f"finish_reason={choice.finish_reason})"
            )
        key = answer.category if answer.category in keys else answer.category.lower()
        if key not in keys:
            shown = clean_reason(answer.category)[:40]
            return _Unusable(f"named {shown!r}, not a configured category", key=shown)
        confidence, source = self._confidence(choice, content, answer)
        return Decision(
            category=key,
            confidence=confidence,
            reason=clean_reason(answer.reason) or f"model chose {key}",
            confidence_source=source,
            **self._common(completion, latency_ms),
        )

    def _confidence(
        self, choice: Any, content: str, answer: Answer
    ) -> tuple[float, ConfidenceSource]:
        logprobs = getattr(choice, "logprobs", None)
        entries = getattr(logprobs, "content", None) or []
        self.logprobs_returned = bool(entries)
        tokens = [(e.token, float(e.logprob)) for e in entries]
        from_tokens = logprob_confidence(tokens, content, answer)
        if from_tokens is not None:
            return from_tokens, ConfidenceSource.LOGPROB
        if answer.confidence is not None:
            return answer.confidence, ConfidenceSource.MODEL
        return 0.0, ConfidenceSource.NONE

    def _common(self, completion: ChatCompletion, latency_ms: float) -> dict[str, Any]:
        usage = completion.usage
        return {
            "classifier": self.name,
            "model": completion.model or self._llm.model,
            "latency_ms": round(latency_ms, 1),
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }

    def _review(self, reason: str, completion: ChatCompletion, latency_ms: float) -> Decision:
        return Decision(
            category=self._settings.review_category,
            confidence=0.0,
            reason=clean_reason(reason),
            confidence_source=ConfidenceSource.NONE,
            **self._common(completion, latency_ms),
        )


def _server_root(base_url: str) -> str:
    """`http://host:8080/v1` -> `http://host:8080`: llama.cpp serves /props beside /v1."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


async def server_slots(base_url: str, api_key: str, timeout_s: float = 2.0) -> int | None:
    """The parallel slots a llama.cpp server reports (`GET /props` -> `total_slots`, its
    `--parallel`), or None when the server does not say (Ollama, vLLM, llama-cpp-python)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            resp = await http.get(
                _server_root(base_url) + "/props",
                headers={"Authorization": f"Bearer {api_key}"},
            )
        slots = resp.json().get("total_slots") if resp.status_code == 200 else None
    except (httpx.HTTPError, OSError, ValueError, AttributeError):
        return None
    return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else None


PROBE_SUBJECT = "Facture F-2024-118"
PROBE_TEXT = "Bonjour, veuillez trouver ci-joint notre facture F-2024-118 à régler sous 30 jours."


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """What `mailtriage doctor` says about the model endpoint."""

    rung: Rung
    logprobs_requested: bool
    logprobs_returned: bool
    first_ms: float  # the first classification, refusals and step-downs included
    latency_ms: float  # one classification once the rung is known
    category: str
    concurrency: int


async def probe_endpoint(settings: Settings) -> EndpointReport:
    """Classify a sample invoice twice on a fresh ladder: which rung the server accepts,
    whether logprobs come back, and the latency of one classification once that is known.
    Raises ClassifierError when the endpoint gives no usable answer."""
    mailbox = settings.mailboxes[0].address if settings.mailboxes else "doctor@localhost"
    sample = Message(
        mailbox=mailbox,
        provider_id="doctor",
        subject=PROBE_SUBJECT,
        sender=Address("compta@fournisseur.example", "Service comptable"),
        text=PROBE_TEXT,
    )
    classifier = LLMClassifier(settings, memory=LadderMemory())
    try:
        first = await classifier.classify(sample)
        second = await classifier.classify(sample)
    finally:
        await classifier.aclose()
    return EndpointReport(
        rung=classifier.rung,
        logprobs_requested=classifier.uses_logprobs,
        logprobs_returned=bool(classifier.logprobs_returned),
        first_ms=first.latency_ms,
        latency_ms=second.latency_ms,
        category=second.category,
        concurrency=classifier.concurrency,
    )


def llm_reachable(settings: Settings) -> bool:
    """True when the configured OpenAI-compatible endpoint answers /models quickly."""
    if not settings.llm.configured:
        return False
    try:
        resp = httpx.get(
            settings.llm.base_url.rstrip("/") + "/models",
            headers={"Authorization": f"Bearer {settings.llm.api_key()}"},
            timeout=2.0,
        )
    except (httpx.HTTPError, OSError):
        return False
    return resp.status_code == 200
