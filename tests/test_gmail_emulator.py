"""The Gmail emulator, exercised through the real google-api-python-client."""

from __future__ import annotations

import base64
import email
import json
import time

import google_auth_httplib2
import httplib2
import httpx
import jwt
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2 import id_token, service_account
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from mailtriage.sandbox.gmail import GmailEmulator, new_rsa_key
from tests.gmail_fixtures import MODIFY, OTHER, SHARED, gm, rfc822, service

__all__ = ["gm"]


def test_labels_nested_colours_and_duplicate_conflict(gm: GmailEmulator) -> None:
    users = service(gm, SHARED).users()
    colour = {"textColor": "#ffffff", "backgroundColor": "#4a86e8"}
    made = (
        users.labels()
        .create(userId=SHARED, body={"name": "Triage/Fournisseurs", "color": colour})
        .execute()
    )
    assert made["id"].startswith("Label_") and made["color"] == colour
    names = {lab["name"] for lab in users.labels().list(userId="me").execute()["labels"]}
    assert {"INBOX", "UNREAD", "SENT", "Triage/Fournisseurs"} <= names

    with pytest.raises(HttpError) as dup:
        users.labels().create(userId="me", body={"name": "triage/fournisseurs"}).execute()
    assert dup.value.status_code == 409
    with pytest.raises(HttpError) as bad:
        users.labels().create(
            userId="me",
            body={"name": "X", "color": {"textColor": "#123456", "backgroundColor": "#4a86e8"}},
        ).execute()
    assert bad.value.status_code == 400 and "palette" in str(bad.value.reason)


def test_get_formats_and_attachment_ids(gm: GmailEmulator) -> None:
    msg = email.message_from_bytes(rfc822(subject="Facture"), policy=email.policy.default)
    msg.add_attachment(
        b"%PDF-1.4 facture", maintype="application", subtype="pdf", filename="F-118.pdf"
    )
    mid = gm.deliver(SHARED, msg.as_bytes())
    users = service(gm, SHARED).users()

    raw = users.messages().get(userId="me", id=mid, format="raw").execute()
    assert base64.urlsafe_b64decode(raw["raw"] + "==") == msg.as_bytes()
    assert raw["labelIds"] == ["INBOX", "UNREAD"]

    full = users.messages().get(userId="me", id=mid, format="full").execute()
    parts = full["payload"]["parts"]
    assert full["payload"]["mimeType"] == "multipart/mixed"
    assert parts[0]["body"]["data"] and parts[0]["partId"] == "0"
    pdf = parts[1]
    assert pdf["filename"] == "F-118.pdf" and "data" not in pdf["body"]
    att = (
        users.messages()
        .attachments()
        .get(userId="me", messageId=mid, id=pdf["body"]["attachmentId"])
        .execute()
    )
    assert base64.urlsafe_b64decode(att["data"] + "==") == b"%PDF-1.4 facture"

    meta = (
        users.messages()
        .get(userId="me", id=mid, format="metadata", metadataHeaders=["Subject"])
        .execute()
    )
    assert meta["payload"]["headers"] == [{"name": "Subject", "value": "Facture"}]
    minimal = users.messages().get(userId="me", id=mid, format="minimal").execute()
    assert "payload" not in minimal and minimal["id"] == mid


def test_list_query_and_paging(gm: GmailEmulator) -> None:
    old = int((time.time() - 10 * 86400) * 1000)
    gm.deliver(SHARED, rfc822(subject="old"), internal_date_ms=old)
    new_ids = {gm.deliver(SHARED, rfc822(subject=f"new {i}")) for i in range(3)}
    gm.deliver(SHARED, rfc822(subject="archived"), labels=("UNREAD",))
    users = service(gm, SHARED).users()

    seen: set[str] = set()
    token = None
    while True:
        page = (
            users.messages()
            .list(userId="me", q="in:inbox newer_than:2d", maxResults=2, pageToken=token)
            .execute()
        )
        seen |= {m["id"] for m in page.get("messages", [])}
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == new_ids
    after = int(time.time() - 86400)
    listed = users.messages().list(userId="me", q=f"after:{after}", labelIds=["INBOX"]).execute()
    assert {m["id"] for m in listed["messages"]} == new_ids


def test_history_types_label_filter_paging_and_expiry(gm: GmailEmulator) -> None:
    users = service(gm, SHARED).users()
    start = users.getProfile(userId="me").execute()["historyId"]
    ids = [gm.deliver(SHARED, rfc822(subject=f"m{i}")) for i in range(3)]
    users.messages().modify(userId="me", id=ids[0], body={"removeLabelIds": ["INBOX"]}).execute()
    gm.deliver(SHARED, rfc822(subject="draft-like"), labels=("UNREAD",))

    added: list[str] = []
    token = None
    while True:
        page = (
            users.history()
            .list(
                userId="me",
                startHistoryId=start,
                historyTypes=["messageAdded"],
                labelId="INBOX",
                maxResults=2,
                pageToken=token,
            )
            .execute()
        )
        for record in page.get("history", []):
            added += [a["message"]["id"] for a in record.get("messagesAdded", [])]
        token = page.get("nextPageToken")
        if not token:
            break
    assert added == ids
    assert int(page["historyId"]) > int(start)
    removed = (
        users.history()
        .list(userId="me", startHistoryId=start, historyTypes=["labelRemoved"])
        .execute()["history"]
    )
    assert removed[0]["labelsRemoved"][0]["labelIds"] == ["INBOX"]

    gm.expire_history(SHARED)
    with pytest.raises(HttpError) as expired:
        users.history().list(userId="me", startHistoryId=start).execute()
    assert expired.value.status_code == 404
    assert expired.value.error_details[0]["reason"] == "notFound"


def test_send_delivers_locally_and_records_outbound(gm: GmailEmulator) -> None:
    users = service(gm, SHARED).users()
    raw = rfc822(sender=SHARED, to=f"{OTHER}, rh@elsewhere.example", subject="Fwd: CV")
    sent = (
        users.messages()
        .send(userId="me", body={"raw": base64.urlsafe_b64encode(raw).decode()})
        .execute()
    )
    assert sent["labelIds"] == ["SENT"]
    assert [m.raw for m in gm.inbox(OTHER)] == [raw]
    assert gm.outbound("rh@elsewhere.example")[0][0] == SHARED


def test_modify_batch_modify_and_multipart_batch(gm: GmailEmulator) -> None:
    ids = [gm.deliver(SHARED, rfc822(subject=f"m{i}")) for i in range(3)]
    svc = service(gm, SHARED)
    users = svc.users()
    users.messages().batchModify(
        userId="me", body={"ids": ids[:2], "removeLabelIds": ["UNREAD"]}
    ).execute()
    assert [("UNREAD" in gm.message(SHARED, i).labels) for i in ids] == [False, False, True]
    with pytest.raises(HttpError) as bad:
        users.messages().modify(userId="me", id=ids[2], body={"addLabelIds": ["SENT"]}).execute()
    assert bad.value.status_code == 400

    results: dict[str, object] = {}
    batch = BatchHttpRequest(
        callback=lambda rid, resp, exc: results.__setitem__(rid, exc or resp),
        batch_uri=gm.url + "batch/gmail/v1",
    )
    for mid in [*ids, "0000"]:
        batch.add(users.messages().get(userId="me", id=mid, format="minimal"))
    batch.execute(http=svc._http)
    assert [r["id"] for r in list(results.values())[:3]] == ids  # type: ignore[index]
    assert isinstance(results["4"], HttpError) and results["4"].status_code == 404
    assert gm.calls("messages.get", SHARED) == 4


def test_token_endpoint_checks_signature_and_delegation(gm: GmailEmulator) -> None:
    info = json.loads(gm.service_account_json())
    http = httplib2.Http(timeout=5)
    request = google_auth_httplib2.Request(http)

    gm.deny_delegation(OTHER)
    denied = service_account.Credentials.from_service_account_info(
        info, scopes=[MODIFY], subject=OTHER
    )
    with pytest.raises(RefreshError, match="unauthorized_client"):
        denied.refresh(request)

    ok = service_account.Credentials.from_service_account_info(
        info, scopes=[MODIFY], subject=SHARED
    )
    ok.refresh(request)
    assert ok.token and ok.token.startswith("ya29.")

    # An assertion signed by another key is refused.
    now = int(time.time())
    claims = {
        "iss": info["client_email"],
        "sub": SHARED,
        "scope": MODIFY,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 600,
    }
    assertion = jwt.encode(claims, new_rsa_key(), algorithm="RS256")
    resp, content = http.request(
        gm.token_uri,
        "POST",
        body=f"grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion={assertion}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 400 and json.loads(content)["error"] == "invalid_grant"

    # A token for one mailbox cannot act on another.
    users = service(gm, SHARED).users()
    with pytest.raises(HttpError) as other:
        users.labels().list(userId=OTHER).execute()
    assert other.value.status_code == 403


def test_rate_limit_injection_and_quota_meter() -> None:
    with GmailEmulator(users=[SHARED], quota_units_per_s=20) as gm:
        users = service(gm, SHARED).users()
        gm.inject("403-user")
        with pytest.raises(HttpError) as err:
            users.labels().list(userId="me").execute()
        assert err.value.status_code == 403
        assert err.value.error_details[0]["reason"] == "userRateLimitExceeded"
        statuses = []
        for _ in range(6):  # 6 x messages.list (5 units) against a 20 units/s budget
            try:
                users.messages().list(userId="me").execute()
                statuses.append(200)
            except HttpError as exc:
                statuses.append(exc.status_code)
        assert statuses[:4] == [200] * 4 and 429 in statuses[4:]
        assert gm.max_units_per_s(SHARED) <= 20


def test_watch_and_signed_push_verifiable_with_google_auth(gm: GmailEmulator) -> None:
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from mailtriage.sandbox.server import free_port

    received: list[tuple[str, dict[str, object]]] = []

    async def hook(request: Request) -> Response:
        received.append((request.headers["authorization"], await request.json()))
        return Response(status_code=204)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hooks/gmail", hook, methods=["POST"])]),
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        endpoint = f"http://127.0.0.1:{port}/hooks/gmail"
        gm.subscribe_push(
            "projects/p/topics/mail", endpoint, audience="https://mt.example/hooks/gmail"
        )
        users = service(gm, SHARED).users()
        watch = users.watch(
            userId="me", body={"topicName": "projects/p/topics/mail", "labelIds": ["INBOX"]}
        ).execute()
        assert int(watch["expiration"]) > (time.time() + 6.9 * 86400) * 1000
        gm.deliver(SHARED, rfc822())
        gm.pusher.wait_idle()
        assert gm.pusher.results[-1][2] == 204
        auth, body = received[0]
        data = json.loads(base64.urlsafe_b64decode(body["message"]["data"]))  # type: ignore[index]
        assert data["emailAddress"] == SHARED and int(data["historyId"]) > int(watch["historyId"])
        claims = id_token.verify_token(
            auth.removeprefix("Bearer "),
            google_auth_httplib2.Request(httplib2.Http()),
            audience="https://mt.example/hooks/gmail",
            certs_url=gm.certs_url,
        )
        assert claims["email"] == gm.signer.service_account and claims["email_verified"]
        users.stop(userId="me").execute()
        gm.deliver(SHARED, rfc822())
        gm.pusher.wait_idle()
        assert len(received) == 1
    finally:
        server.should_exit = True
        thread.join(5)


def test_lost_answers_and_executed_hooks(gm: GmailEmulator) -> None:
    """messages.send is done, then its answer is lost; a hook runs before the answer."""
    token = gm.state.issue_token(SHARED, frozenset({MODIFY}))
    url = f"{gm.url}gmail/v1/users/{SHARED}/messages/send"
    raw = rfc822(subject="hello", to="someone@elsewhere.example")
    seen: list[str] = []
    gm.on_executed("messages.send", lambda e: seen.append(e.detail["to"]))
    gm.lose_response("messages.send", "503")
    body = {"raw": base64.urlsafe_b64encode(raw).decode()}
    headers = {"Authorization": f"Bearer {token}"}
    r = httpx.post(url, json=body, headers=headers)
    assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE"
    assert len(gm.outbound("someone@elsewhere.example")) == 1 and seen
    gm.lose_response("messages.send", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, json=body, headers=headers)
    assert len(gm.outbound("someone@elsewhere.example")) == 2  # done twice: sent twice
