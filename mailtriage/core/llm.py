"""The LLM classifier: one chat completion per message on an OpenAI-compatible endpoint.

Works with OpenAI, Azure OpenAI, Ollama and vLLM through the `openai` client. It asks for
a strict JSON schema whose `category` is an enum of the mailbox's configured keys and
steps down to JSON mode, then to plain text, when a server rejects that (HTTP 400),
remembering what works. Confidence comes from the logprobs of the category's tokens when
the server returns them, else from the number the model wrote.

Failure policy: an answer that names no configured key (unknown key, refusal, content
filter) goes to the review category; no usable answer at all (timeout, throttling or
server errors after the client's retries, unparseable output) raises `ClassifierError`,
so the pipeline leaves the message for a later attempt.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletion

from mailtriage.core.config import Settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.errors import ClassifierError, ConfigError
from mailtriage.core.message import Message
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

__all__ = ["ExamplesFor", "LLMClassifier", "ResponseMode", "logprob_confidence"]

log = logging.getLogger(__name__)

# Few-shot hook: (message) -> [(text excerpt, category key)], sync or async.
ExamplesFor = Callable[[Message], Sequence[tuple[str, str]] | Awaitable[Sequence[tuple[str, str]]]]

MAX_ANSWER_TOKENS = 256
TOP_LOGPROBS = 5


class ResponseMode(StrEnum):
    """How the answer's format is requested, from the strictest to the loosest."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    TEXT = "text"


_MODES = (ResponseMode.JSON_SCHEMA, ResponseMode.JSON_OBJECT, ResponseMode.TEXT)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """The optional request features one call uses; loosened after an HTTP 400."""

    mode: ResponseMode
    logprobs: bool
    # Newer OpenAI models refuse `max_tokens` (they want `max_completion_tokens`), and
    # reasoning models refuse any temperature but the default.
    completion_tokens_param: bool = False
    temperature: bool = True

    def describe(self) -> str:
        parts = [str(self.mode), "logprobs" if self.logprobs else "no logprobs"]
        if self.completion_tokens_param:
            parts.append("max_completion_tokens")
        if not self.temperature:
            parts.append("default temperature")
        return "/".join(parts)


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


def _rejected_feature(exc: openai.APIStatusError) -> str | None:
    """Which optional request feature a 400 names: 'logprobs', 'response_format',
    'max_tokens', 'temperature', or None when it names none of them."""
    param = (exc.param or "").lower()
    text = f"{param} {exc.message}".lower()
    for feature, words in (
        ("logprobs", ("logprob",)),
        ("response_format", ("response_format", "json_schema", "json_object")),
        ("max_tokens", ("max_tokens",)),
        ("temperature", ("temperature",)),
    ):
        if any(w in text for w in words):
            return feature
    return None


def _failure(exc: openai.OpenAIError, timeout_s: float) -> ClassifierError:
    """Translate an SDK error into ClassifierError with a short, secret-free message."""
    if isinstance(exc, openai.APITimeoutError):
        return ClassifierError(f"LLM request timed out after {timeout_s:g} s")
    if isinstance(exc, openai.APIConnectionError):
        return ClassifierError("cannot reach the LLM endpoint (connection failed)")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ClassifierError(
            f"LLM endpoint refused the credentials (HTTP {exc.status_code}); "
            "check llm.api_key_env / llm.api_key_file"
        )
    if isinstance(exc, openai.RateLimitError):
        return ClassifierError("LLM endpoint still throttling (HTTP 429) after retries")
    if isinstance(exc, openai.APIStatusError):
        detail = " ".join(str(exc.message).split())[:200]
        return ClassifierError(f"LLM endpoint failed (HTTP {exc.status_code}): {detail}")
    return ClassifierError(f"LLM call failed: {type(exc).__name__}")


class LLMClassifier:
    """Classifies a message with a chat model among the mailbox's configured categories.

    `client` may be injected (tests, shared clients); otherwise one is built from
    `settings.llm` and closed by `aclose()`. `examples_for` supplies few-shot examples
    (text excerpt, key) for a message, e.g. learned from the ledger.
    """

    name = "llm"

    def __init__(
        self,
        settings: Settings,
        *,
        client: openai.AsyncOpenAI | None = None,
        examples_for: ExamplesFor | None = None,
    ) -> None:
        if not settings.llm.model:
            raise ConfigError("llm.model: empty; set a model name to use the LLM classifier")
        self._settings = settings
        self._llm = settings.llm
        self._owns_client = client is None
        self._client = client or openai.AsyncOpenAI(
            base_url=settings.llm.base_url,
            api_key=settings.llm.api_key(),
            timeout=settings.llm.timeout_s,
            max_retries=settings.llm.max_retries,
        )
        self._examples_for = examples_for
        self._semaphore = asyncio.Semaphore(settings.llm.max_concurrency)
        # What this endpoint accepted last; downgrades are remembered once they work.
        self._accepted = _Attempt(ResponseMode.JSON_SCHEMA, settings.llm.logprobs)

    @property
    def mode(self) -> ResponseMode:
        """The response format the endpoint accepted last."""
        return self._accepted.mode

    @property
    def uses_logprobs(self) -> bool:
        return self._accepted.logprobs

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()

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
        )
        async with self._semaphore:
            started = time.perf_counter()
            completion, attempt = await self._complete(messages, keys)
            latency_ms = (time.perf_counter() - started) * 1000.0
        return self._decide(completion, attempt, keys, latency_ms)

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

    def _request(
        self, messages: list[dict[str, str]], keys: list[str], attempt: _Attempt
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self._llm.model, "messages": messages}
        if attempt.temperature:
            kwargs["temperature"] = self._llm.temperature
        if attempt.completion_tokens_param:
            kwargs["max_completion_tokens"] = MAX_ANSWER_TOKENS
        else:
            kwargs["max_tokens"] = MAX_ANSWER_TOKENS
        if attempt.mode is ResponseMode.JSON_SCHEMA:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": SCHEMA_NAME,
                    "schema": response_schema(keys),
                    "strict": True,
                },
            }
        elif attempt.mode is ResponseMode.JSON_OBJECT:
            kwargs["response_format"] = {"type": "json_object"}
        if attempt.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
        return kwargs

    async def _complete(
        self, messages: list[dict[str, str]], keys: list[str]
    ) -> tuple[ChatCompletion, _Attempt]:
        """One completion, stepping down format/logprobs on HTTP 400 until one works."""
        attempt = self._accepted
        while True:
            try:
                completion: ChatCompletion = await self._client.chat.completions.create(
                    **self._request(messages, keys, attempt)
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                lower = self._downgrade(attempt, _rejected_feature(exc))
                if lower is None:
                    raise _failure(exc, self._llm.timeout_s) from exc
                log.info(
                    "LLM endpoint rejected %s (HTTP %s); retrying with %s",
                    attempt.describe(),
                    exc.status_code,
                    lower.describe(),
                )
                attempt = lower
                continue
            except openai.OpenAIError as exc:
                raise _failure(exc, self._llm.timeout_s) from exc
            self._accepted = attempt
            return completion, attempt

    @staticmethod
    def _downgrade(attempt: _Attempt, feature: str | None) -> _Attempt | None:
        """The next looser request after a 400 naming `feature`; None when nothing is left.

        A 400 that names no feature loosens the format first, then drops logprobs.
        """
        can_drop_format = attempt.mode is not ResponseMode.TEXT
        next_mode = _MODES[min(_MODES.index(attempt.mode) + 1, len(_MODES) - 1)]
        if feature == "logprobs":
            return replace(attempt, logprobs=False) if attempt.logprobs else None
        if feature == "response_format":
            return replace(attempt, mode=next_mode) if can_drop_format else None
        if feature == "max_tokens":
            if attempt.completion_tokens_param:
                return None
            return replace(attempt, completion_tokens_param=True)
        if feature == "temperature":
            return replace(attempt, temperature=False) if attempt.temperature else None
        if can_drop_format:
            return replace(attempt, mode=next_mode)
        if attempt.logprobs:
            return replace(attempt, logprobs=False)
        return None

    def _decide(
        self,
        completion: ChatCompletion,
        attempt: _Attempt,
        keys: list[str],
        latency_ms: float,
    ) -> Decision:
        usage = completion.usage
        common: dict[str, Any] = {
            "classifier": self.name,
            "model": completion.model or self._llm.model,
            "latency_ms": round(latency_ms, 1),
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }
        if not completion.choices:
            raise ClassifierError("LLM answer has no choices")
        choice = completion.choices[0]
        refusal = getattr(choice.message, "refusal", None)
        if refusal:
            return self._review(f"model refused to classify: {clean_reason(refusal)}", common)
        content = choice.message.content or ""
        if not content.strip():
            if choice.finish_reason == "content_filter":
                return self._review("answer blocked by the endpoint's content filter", common)
            raise ClassifierError(
                f"LLM gave an empty answer (finish_reason={choice.finish_reason})"
            )
        if attempt.mode is ResponseMode.TEXT:
            answer = parse_text_answer(content, keys)
        else:
            answer = parse_json_answer(content)
        if answer is None:
            raise ClassifierError(
                f"LLM answer could not be parsed ({len(content)} characters, "
                f"finish_reason={choice.finish_reason})"
            )
        key = answer.category if answer.category in keys else answer.category.lower()
        if key not in keys:
            shown = clean_reason(answer.category)[:40]
            return self._review(
                f"model answered {shown!r}, which is not a configured category", common
            )
        confidence, source = self._confidence(choice, content, answer)
        reason = clean_reason(answer.reason) or f"model chose {key}"
        return Decision(
            category=key,
            confidence=confidence,
            reason=reason,
            confidence_source=source,
            **common,
        )

    @staticmethod
    def _confidence(choice: Any, content: str, answer: Answer) -> tuple[float, ConfidenceSource]:
        logprobs = getattr(choice, "logprobs", None)
        entries = getattr(logprobs, "content", None) or []
        tokens = [(e.token, float(e.logprob)) for e in entries]
        from_tokens = logprob_confidence(tokens, content, answer)
        if from_tokens is not None:
            return from_tokens, ConfidenceSource.LOGPROB
        if answer.confidence is not None:
            return answer.confidence, ConfidenceSource.MODEL
        return 0.0, ConfidenceSource.NONE

    def _review(self, reason: str, common: dict[str, Any]) -> Decision:
        return Decision(
            category=self._settings.review_category,
            confidence=0.0,
            reason=clean_reason(reason),
            confidence_source=ConfidenceSource.NONE,
            **common,
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
