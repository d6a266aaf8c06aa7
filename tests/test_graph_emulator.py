"""The emulator follows Graph's documented wire behaviour (checked with raw HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from mailtriage.connectors.graph.convert import MARKER_ID
from mailtriage.sandbox.graph import GraphEmulator

BOX = "contact@example.com"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        e.add_mailbox(BOX)
        e.add_mailbox("dept@example.com")
        yield e


@pytest.fixture
def http(emu: GraphEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url + f"/users/{quote(BOX)}") as c:
        yield c


def msg_url(mid: str) -> str:
    return f"/messages/{quote(mid, safe='')}"


@pytest.mark.parametrize(("headers", "same_id"), [({}, False), (IMMUTABLE, True)])
def test_move_returns_201_and_a_new_id_unless_immutable(
    emu: GraphEmulator, http: httpx.Client, headers: dict[str, str], same_id: bool
) -> None:
    m = emu.deliver(BOX, subject="s", body="b", sender="a@x.org")
    ref = m.immutable_id if same_id else m.rest_id
    r = http.post(msg_url(ref) + "/move", json={"DestinationId": "archive"}, headers=headers)
    assert r.status_code == 201
    assert (r.json()["id"] == ref) is same_id
    assert emu.where(BOX, m.immutable_id) == "Archive"


def test_delta_pages_tokens_and_removed(emu: GraphEmulator, http: httpx.Client) -> None:
    ms = [emu.deliver(BOX, subject=f"s{i}", body="b", sender="a@x.org") for i in range(3)]
    r = http.get(
        "/mailFolders/inbox/messages/delta()",
        params={"$select": "subject"},
        headers={"Prefer": "odata.maxpagesize=2, " + IMMUTABLE["Prefer"]},
    )
    page1 = r.json()
    assert r.headers["preference-applied"].count("=") >= 2
    assert [v["subject"] for v in page1["value"]] == ["s0", "s1"]
    assert set(page1["value"][0]) == {"@odata.etag", "id", "subject"}
    page2 = httpx.get(page1["@odata.nextLink"], headers=IMMUTABLE).json()
    assert [v["subject"] for v in page2["value"]] == ["s2"] and "@odata.deltaLink" in page2
    http.post(msg_url(ms[0].immutable_id) + "/move", json={"destinationId": "deleteditems"})
    page3 = httpx.get(page2["@odata.deltaLink"], headers=IMMUTABLE).json()
    assert page3["value"] == [
        {
            "@odata.type": "#microsoft.graph.message",
            "id": ms[0].immutable_id,
            "@removed": {"reason": "deleted"},
        }
    ]
    emu.expire_delta_tokens()
    gone = httpx.get(page3["@odata.deltaLink"])
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "syncStateNotFound"


def test_body_preference_and_headers(emu: GraphEmulator, http: httpx.Client) -> None:
    m = emu.deliver(
        BOX,
        subject="s",
        body="<p>Bonjour&nbsp;<b>vous</b></p>",
        html=True,
        sender="a@x.org",
        headers={"Return-Path": "<a@x.org>"},
    )
    r = http.get(
        msg_url(m.rest_id),
        params={"$select": "body,internetMessageHeaders"},
        headers={"Prefer": 'outlook.body-content-type="text"'},
    )
    assert r.headers["preference-applied"] == 'outlook.body-content-type="text"'
    assert r.json()["body"] == {"contentType": "text", "content": "Bonjour\xa0vous"}
    assert r.json()["internetMessageHeaders"] == [{"name": "Return-Path", "value": "<a@x.org>"}]
    plain = http.get(msg_url(m.rest_id)).json()
    assert plain["body"]["contentType"] == "html" and "internetMessageHeaders" not in plain


HEADER_SET = "{00020386-0000-0000-C000-000000000046}"
FORWARD_ID = "String {6c2f0b8e-3d41-4a7e-9b55-7a1d2e4c9f30} Name MailtriageForward"
DEPT = [{"emailAddress": {"address": "dept@example.com"}}]


def forward_body(key: str) -> dict[str, object]:
    """A forward set entirely in its `message` parameter, as the connector sends it."""
    return {
        "Comment": "FYI",
        "Message": {
            "toRecipients": DEPT,
            "replyTo": [{"emailAddress": {"address": "client@x.org"}}],
            "singleValueExtendedProperties": [
                {"id": FORWARD_ID, "value": key},
                {"id": f"String {HEADER_SET} Name x-mailtriage", "value": "forwarded"},
            ],
        },
    }


def test_forward_draft_rules(emu: GraphEmulator, http: httpx.Client) -> None:
    """createForward takes everything at creation; headers cannot be PATCHed afterwards."""
    m = emu.deliver(BOX, subject="Devis", body="b", sender="client@x.org")
    url = msg_url(m.rest_id) + "/createForward"
    neither = http.post(url, json={"Comment": "FYI"})
    both = http.post(url, json={"ToRecipients": DEPT, "Message": {"toRecipients": DEPT}})
    assert neither.status_code == both.status_code == 400
    draft = http.post(
        url,
        json=forward_body("mtf-1"),
    )
    assert draft.status_code == 201
    draft_id = draft.json()["id"]
    late = http.patch(
        msg_url(draft_id),
        json={"internetMessageHeaders": [{"name": "X-Mailtriage", "value": "forwarded"}]},
    )
    assert late.status_code == 400  # settable only when the message is created
    assert http.post(msg_url(draft_id) + "/send").status_code == 202
    (got,) = emu.folder_messages("dept@example.com")
    assert got.headers == [{"name": "x-mailtriage", "value": "forwarded"}]
    assert got.ext_props == {f"String {HEADER_SET} Name x-mailtriage": "forwarded"}
    assert got.reply_to[0]["emailAddress"]["address"] == "client@x.org"
    flt = f"singleValueExtendedProperties/any(ep: ep/id eq '{FORWARD_ID}' and ep/value eq 'MTF-1')"
    found = http.get(f"{emu.base_url}/users/{BOX}/messages", params={"$filter": flt}).json()
    assert [v["isDraft"] for v in found["value"]] == [False]  # the sent copy keeps its id


def test_forward_takes_the_message_parameter_in_one_request(
    emu: GraphEmulator, http: httpx.Client
) -> None:
    """message-forward: 202, recipients and Reply-To from the `message` parameter, the
    forward saved in Sent Items with its extended properties, and no draft left behind."""
    m = emu.deliver(BOX, subject="Devis", body="b", sender="client@x.org")
    url = msg_url(m.rest_id) + "/forward"
    both = http.post(url, json={"ToRecipients": DEPT, "Message": {"toRecipients": DEPT}})
    assert both.status_code == 400
    sent = http.post(
        url,
        json=forward_body("mtf-2"),
    )
    assert sent.status_code == 202 and sent.content == b""
    (got,) = emu.folder_messages("dept@example.com")
    assert [r["emailAddress"]["address"] for r in got.reply_to] == ["client@x.org"]
    assert got.headers == [{"name": "x-mailtriage", "value": "forwarded"}]
    assert emu.folder_messages(BOX, "Drafts") == []
    flt = f"singleValueExtendedProperties/any(ep: ep/id eq '{FORWARD_ID}' and ep/value eq 'mtf-2')"
    found = http.get(
        f"{emu.base_url}/users/{BOX}/messages", params={"$filter": flt}, headers=IMMUTABLE
    ).json()
    (copy,) = found["value"]
    assert copy["isDraft"] is False
    assert emu.where(BOX, copy["id"]) == "Sent Items"


def test_extended_property_expand_and_filter(emu: GraphEmulator, http: httpx.Client) -> None:
    a = emu.deliver(BOX, subject="a", body="b", sender="a@x.org")
    emu.deliver(BOX, subject="b", body="b", sender="a@x.org")
    prop = {"id": MARKER_ID, "value": "v1;rh;0.90"}
    r = http.patch(
        msg_url(a.rest_id),
        json={"@odata.type": "#microsoft.graph.message", "singleValueExtendedProperties": [prop]},
    )
    assert r.status_code == 200 and "singleValueExtendedProperties" not in r.json()
    got = http.get(
        msg_url(a.rest_id),
        params={"$expand": f"singleValueExtendedProperties($filter=id eq '{MARKER_ID}')"},
    ).json()
    assert got["singleValueExtendedProperties"] == [prop]
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{MARKER_ID}' and ep/value ne null)"
    listed = http.get("/messages", params={"$filter": flt}).json()["value"]
    assert [m["subject"] for m in listed] == ["a"]


def test_subscription_limits_and_error_shape(emu: GraphEmulator) -> None:
    too_long = (datetime.now(UTC) + timedelta(minutes=10_080 + 5)).isoformat()
    r = httpx.post(
        emu.base_url + "/subscriptions",
        json={
            "changeType": "created",
            "notificationUrl": "http://127.0.0.1:9/none",
            "resource": f"users/{BOX}/mailFolders('inbox')/messages",
            "expirationDateTime": too_long,
            "clientState": "s",
        },
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"code", "message", "innerError"} and "10080" in err["message"]


def test_permissions_per_mailbox(emu: GraphEmulator, http: httpx.Client) -> None:
    emu.mailbox(BOX).permissions = {"Mail.ReadWrite"}
    r = http.get("/outlook/masterCategories")
    assert r.status_code == 403 and r.json()["error"]["code"] == "ErrorAccessDenied"
    emu.inject(503, retry_after=2)
    r = http.get("/mailFolders/inbox")
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert http.get("/mailFolders/inbox").json()["displayName"] == "Inbox"


def test_lost_answers_and_executed_hooks(emu: GraphEmulator, http: httpx.Client) -> None:
    """A write is done, then its answer is lost; a hook runs before the answer leaves."""
    m = emu.deliver(BOX, subject="s", body="b", sender="a@x.org")
    seen: list[tuple[str, str | None]] = []
    emu.on_executed("move", lambda e: seen.append((e.kind, emu.where(BOX, e.target))))
    emu.lose_response("move", "504")
    r = http.post(msg_url(m.immutable_id) + "/move", json={"destinationId": "archive"})
    assert r.status_code == 504 and emu.where(BOX, m.immutable_id) == "Archive"
    assert seen == [("move", "Archive")]
    emu.lose_response("patch", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        http.patch(msg_url(m.immutable_id), json={"isRead": True})
    assert emu.message(BOX, m.immutable_id).is_read  # done, though never answered
    assert [e.kind for e in emu.executed] == ["move", "patch"]
