"""The model endpoint's row of `mailtriage doctor`: rung, logprobs, latency, concurrency."""

from __future__ import annotations

import asyncio

from mailtriage.core.config import Settings
from mailtriage.core.errors import ClassifierError, ConfigError
from mailtriage.core.ladder import Rung
from mailtriage.core.llm import EndpointReport, probe_endpoint


def describe(report: EndpointReport, settings: Settings) -> str:
    """One line: what the server accepts and how fast one classification is."""
    llm = settings.llm
    rungs = list(Rung)
    start = rungs[0] if llm.response_format == "auto" else Rung(llm.response_format)
    refused = rungs[rungs.index(start) : rungs.index(report.rung)]
    fmt = f"output format {report.rung}"
    if refused:
        fmt += f" ({', '.join(map(str, refused))} refused)"
    if not llm.logprobs:
        logprobs = "logprobs off (llm.logprobs = false)"
    elif not report.logprobs_requested:
        logprobs = "logprobs refused"
    elif report.logprobs_returned:
        logprobs = "logprobs returned"
    else:
        logprobs = "logprobs accepted but not returned"
    if not llm.concurrency_is_default:
        why = "llm.max_concurrency"
    elif not llm.is_local:
        why = "cloud default"
    elif report.concurrency != llm.max_concurrency:
        why = "the server's slots"
    else:
        why = "local default; the server reports no slots"
    return (
        f"{fmt}, {logprobs}, one classification {report.latency_ms:.0f} ms "
        f"(the first {report.first_ms:.0f} ms, probing included), "
        f"concurrency {report.concurrency} ({why})"
    )


def probe(settings: Settings) -> tuple[bool, str, str]:
    """(ok, detail, fix) for the doctor's model row: one line on what the server accepts."""
    try:
        report = asyncio.run(probe_endpoint(settings))
    except (ClassifierError, ConfigError) as exc:
        fix = "start the model server, or fix [llm] base_url / model / the key"
        return False, f"{settings.llm.base_url}: {exc}", fix
    return True, f"{settings.llm.base_url}: {describe(report, settings)}", ""
