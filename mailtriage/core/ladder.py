"""The output-format ladder of the LLM classifier: what to ask an OpenAI-compatible server
for, which refusals mean "ask differently", and what worked for each endpoint.

Rungs, strictest first:

    json_schema         response_format {"type": "json_schema", "json_schema": {strict schema}}
                        (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp's llama-server)
    json_object_schema  response_format {"type": "json_object", "schema": {schema}}: the form
                        llama.cpp servers turn into a grammar; llama-cpp-python accepts only
                        this one (it answers json_schema with HTTP 500)
    json_object         response_format {"type": "json_object"}: any JSON object
    text                no response_format; the key is found in the text

The first two constrain `category` to the configured keys. Besides the rung, an attempt
carries the request quirks a server refused once: logprobs, `max_tokens` (newer OpenAI
models want `max_completion_tokens`) and temperature (reasoning models take only the
default).

`LadderMemory` keeps, per endpoint and model, the attempt that refusals led to, in memory
only: a restarted process probes again, since the server may have changed meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import openai

__all__ = [
    "ENDPOINTS",
    "Attempt",
    "LadderMemory",
    "Rung",
    "refused_feature",
    "step_down",
]

TOP_LOGPROBS = 5
# A refusal of the request's shape comes back as 400 or 422 (OpenAI, vLLM, FastAPI
# validation) or as 500 (llama-cpp-python wraps its validation errors in a 500,
# llama_cpp/server/errors.py RouteErrorHandler).
REFUSAL_STATUSES = frozenset({400, 422, 500})
# The parameter an error names decides; failing that, its message, format words first
# (llama-cpp-python's 500 quotes the failing field's path: ('body', 'response_format', ...)).
_FEATURE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("response_format", ("response_format", "json_schema", "json_object", "schema")),
    ("logprobs", ("logprob",)),
    ("max_tokens", ("max_tokens",)),
    ("temperature", ("temperature",)),
)


class Rung(StrEnum):
    """How the answer's format is requested, from the strictest to the loosest."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT_SCHEMA = "json_object_schema"
    JSON_OBJECT = "json_object"
    TEXT = "text"

    @property
    def looser(self) -> Rung | None:
        """The next looser rung; None below `text`."""
        rungs = list(Rung)
        index = rungs.index(self)
        return rungs[index + 1] if index + 1 < len(rungs) else None

    @property
    def constrained(self) -> bool:
        """Whether the server is asked to keep `category` within the keys."""
        return self in (Rung.JSON_SCHEMA, Rung.JSON_OBJECT_SCHEMA)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The optional request features one call uses."""

    rung: Rung
    logprobs: bool
    completion_tokens_param: bool = False
    temperature: bool = True

    def describe(self) -> str:
        parts = [str(self.rung), "logprobs" if self.logprobs else "no logprobs"]
        if self.completion_tokens_param:
            parts.append("max_completion_tokens")
        if not self.temperature:
            parts.append("default temperature")
        return "/".join(parts)

    def response_format(self, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
        if self.rung is Rung.JSON_SCHEMA:
            return {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            }
        if self.rung is Rung.JSON_OBJECT_SCHEMA:
            return {"type": "json_object", "schema": schema}
        if self.rung is Rung.JSON_OBJECT:
            return {"type": "json_object"}
        return None

    def request(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
        schema_name: str,
        schema: dict[str, Any],
    ) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for this attempt."""
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if self.temperature:
            kwargs["temperature"] = temperature
        tokens_param = "max_completion_tokens" if self.completion_tokens_param else "max_tokens"
        kwargs[tokens_param] = max_tokens
        response_format = self.response_format(schema_name, schema)
        if response_format is not None:
            kwargs["response_format"] = response_format
        if self.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
        return kwargs


def refused_feature(exc: openai.APIStatusError) -> str | None:
    """Which optional request feature an error names: 'logprobs', 'response_format',
    'max_tokens', 'temperature', or None (also for statuses that are no refusal)."""
    if exc.status_code not in REFUSAL_STATUSES:
        return None
    param = str(getattr(exc, "param", None) or "").lower()
    for text in (param, str(exc.message).lower()):
        for feature, words in _FEATURE_WORDS:
            if text and any(w in text for w in words):
                return feature
    return None


def step_down(attempt: Attempt, feature: str | None) -> Attempt | None:
    """The next looser attempt after a refusal naming `feature`; None when nothing is left.

    A refusal that names no feature loosens the format first, then drops logprobs.
    """
    lower = attempt.rung.looser
    if feature == "logprobs":
        return replace(attempt, logprobs=False) if attempt.logprobs else None
    if feature == "response_format":
        return replace(attempt, rung=lower) if lower else None
    if feature == "max_tokens":
        if attempt.completion_tokens_param:
            return None
        return replace(attempt, completion_tokens_param=True)
    if feature == "temperature":
        return replace(attempt, temperature=False) if attempt.temperature else None
    if lower is not None:
        return replace(attempt, rung=lower)
    if attempt.logprobs:
        return replace(attempt, logprobs=False)
    return None


Endpoint = tuple[str, str]  # (base URL, model)


class LadderMemory:
    """What each endpoint and model accepted, for this process only."""

    def __init__(self) -> None:
        self._accepted: dict[Endpoint, Attempt] = {}

    def get(self, endpoint: Endpoint) -> Attempt | None:
        return self._accepted.get(endpoint)

    def remember(self, endpoint: Endpoint, attempt: Attempt) -> None:
        self._accepted[endpoint] = attempt

    def clear(self) -> None:
        self._accepted.clear()


# The process-wide memory: every classifier on one endpoint and model shares it.
ENDPOINTS = LadderMemory()
