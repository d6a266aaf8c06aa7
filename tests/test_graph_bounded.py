"""Graph message reads with a memory ceiling: long JSON strings cut as they stream."""

from __future__ import annotations

import gzip
import json
import random

import httpx
import pytest

from mailtriage.connectors.graph.bounded import BoundedTransport, JsonStringCap
from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from tests.graph_fixtures import SHARED, emu, no_backoff
from tests.test_graph_connector import drain, make_settings

__all__ = ["emu", "no_backoff"]

pytestmark = pytest.mark.usefixtures("no_backoff")
PIECES = ["a", "é", "€", "😀", '"', "\\", "\n", "\t", "\u0001", "/", "xxxxx", "\u2028"]


def through(cap: JsonStringCap, data: bytes, sizes: random.Random) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        k = sizes.randint(1, 9)
        out += cap.feed(data[i : i + k])
        i += k
    return bytes(out)


def check(original: object, cut: object, limit: int, ascii_only: bool) -> None:
    if isinstance(original, str):
        assert isinstance(cut, str) and original.startswith(cut)
        cut.encode("utf-8")  # no lone surrogate, no broken character
        encoded = len(json.dumps(original, ensure_ascii=ascii_only).encode()) - 2
        if encoded <= limit:
            assert cut == original  # what fits is untouched
        else:  # escapes are kept whole, a cut character completed: at most 3 bytes over
            assert len(json.dumps(cut, ensure_ascii=ascii_only).encode()) - 2 <= limit + 3
    elif isinstance(original, dict):
        assert isinstance(cut, dict) and original.keys() == cut.keys()
        for key in original:
            check(original[key], cut[key], limit, ascii_only)
    elif isinstance(original, list):
        assert isinstance(cut, list) and len(original) == len(cut)
        for a, b in zip(original, cut, strict=True):
            check(a, b, limit, ascii_only)
    else:
        assert original == cut


@pytest.mark.parametrize("seed", range(4))
def test_any_chunking_gives_valid_json_with_long_strings_cut(seed: int) -> None:
    rnd = random.Random(seed)

    def text(n: int) -> str:
        return "".join(rnd.choice(PIECES) for _ in range(n))

    for _ in range(500):
        doc = {
            "value": [
                {"id": text(3), "body": {"content": text(rnd.randint(0, 300))}, "n": rnd.random()}
                for _ in range(rnd.randint(0, 4))
            ],
            "@odata.nextLink": text(rnd.randint(0, 3)),
        }
        ascii_only = rnd.random() < 0.5
        data = json.dumps(doc, ensure_ascii=ascii_only).encode()
        limit = rnd.randint(16, 80)  # above every key's length: keys stay whole
        out = through(JsonStringCap(limit), data, rnd)
        check(doc, json.loads(out), limit, ascii_only)


async def test_gzip_responses_are_inflated_and_cut() -> None:
    body = json.dumps({"value": [{"id": "m1", "body": {"content": "é" * 300_000}}]}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "gzip, deflate"
        return httpx.Response(
            200,
            content=gzip.compress(body),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )

    bounded = BoundedTransport(httpx.MockTransport(handler), limit=1000)
    async with httpx.AsyncClient(transport=bounded) as client:
        resp = await client.get("https://graph.example/v1.0/users/a/messages/delta()")
        other = await client.get("https://graph.example/v1.0/users/a/mailFolders")
    content = resp.json()["value"][0]["body"]["content"]
    assert content == "é" * 166  # \u00e9 escapes are six bytes each, kept whole
    assert bounded.cut == 1
    assert len(other.json()["value"][0]["body"]["content"]) == 300_000  # not about messages


async def test_only_json_is_filtered() -> None:
    mime = b'Subject: x\r\n\r\n"' + b"y" * 5000 + b'"'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=mime, headers={"content-type": "message/rfc822"})

    bounded = BoundedTransport(httpx.MockTransport(handler), limit=100)
    async with httpx.AsyncClient(transport=bounded) as client:
        resp = await client.get("https://graph.example/v1.0/users/a/messages/m1/$value")
    assert resp.content == mime


async def test_a_huge_body_comes_in_cut_and_the_message_is_triaged(emu: GraphEmulator) -> None:
    settings = make_settings(emu)
    box = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        _, cursor = await drain(box, None)
        emu.deliver(
            SHARED,
            subject="Demande de devis",
            body="Bonjour, pourriez-vous nous faire un devis ? " + "x" * (20 * 1024 * 1024),
            sender="client@example.org",
        )
        [message], _ = await drain(box, cursor)
        bounded = box.client.transport._inner
        assert isinstance(bounded, BoundedTransport) and bounded.cut == 1
        assert message.text.startswith("Bonjour, pourriez-vous nous faire un devis ?")
        assert len(message.text) <= 100_000
    finally:
        await box.aclose()
