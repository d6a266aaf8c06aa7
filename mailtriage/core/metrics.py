"""Prometheus metrics, in one registry of mailtriage's own (served at /metrics).

Label values are mailbox addresses, category keys and outcomes: never subjects or bodies.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = Counter(
    "mailtriage_messages",
    "Messages handled, by mailbox, category and outcome.",
    ["mailbox", "category", "outcome"],
    registry=REGISTRY,
)
CLASSIFIER_LATENCY = Histogram(
    "mailtriage_classifier_latency_seconds",
    "Time to classify one message, by classifier.",
    ["classifier"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "mailtriage_model_tokens",
    "Tokens sent to and received from the language model.",
    ["kind"],
    registry=REGISTRY,
)
MODEL_CALLS_SAVED = Counter(
    "mailtriage_model_calls_saved",
    "Messages decided without a model call, by what decided (rule, skip, cascade).",
    ["by"],
    registry=REGISTRY,
)
THROTTLED = Counter(
    "mailtriage_provider_throttled",
    "Throttling responses (429/503, rate limits) received from a provider.",
    ["provider", "mailbox"],
    registry=REGISTRY,
)
SYNC_LAG = Gauge(
    "mailtriage_sync_lag_seconds",
    "Seconds since the mailbox last completed a sync.",
    ["mailbox"],
    registry=REGISTRY,
)
LAST_SYNC = Gauge(
    "mailtriage_last_sync_timestamp_seconds",
    "Unix time of the mailbox's last completed sync.",
    ["mailbox"],
    registry=REGISTRY,
)
CORRECTIONS = Counter(
    "mailtriage_corrections",
    "Triaged messages that staff moved to another category.",
    ["mailbox"],
    registry=REGISTRY,
)
