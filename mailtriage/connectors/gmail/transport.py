"""httplib2 without silent replays of writes that are not idempotent.

httplib2 repeats a request on a fresh connection when the server closes the connection
without an answer ("If we get a BadStatusLine on the first try then that means the
connection just went stale, so retry regardless of the number of RETRIES set",
`httplib2.Http._conn_request`, 0.32). For a `messages.send` whose answer was lost, that
replay sends the forward twice. `NoReplayHttp` sends such requests once, on a fresh
connection (so a stale pooled connection cannot be mistaken for a lost answer), and lets
any failure surface: the connector then looks for the sent copy before trying again.
"""

from __future__ import annotations

import http.client
import re
import socket
from typing import Any

import httplib2

# Gmail methods that add something each time they run (the JSON and the upload paths).
_NOT_IDEMPOTENT = re.compile(r"/gmail/v1/users/[^/]+/(?:messages|drafts)/send\b")


def replays_harm(method: str, uri: str) -> bool:
    """Whether repeating this request could do its effect twice."""
    return method.upper() == "POST" and bool(_NOT_IDEMPOTENT.search(uri))


class NoReplayHttp(httplib2.Http):  # type: ignore[misc]
    """`httplib2.Http` that never repeats a send on its own."""

    def _conn_request(
        self, conn: Any, request_uri: str, method: str, body: Any, headers: Any
    ) -> tuple[httplib2.Response, bytes]:
        if not replays_harm(method, request_uri):
            result: tuple[httplib2.Response, bytes] = super()._conn_request(
                conn, request_uri, method, body, headers
            )
            return result
        conn.close()
        try:
            conn.connect()
            conn.request(method, request_uri, body, headers)
            raw = conn.getresponse()
            content = raw.read()
        except socket.gaierror as exc:
            conn.close()
            raise httplib2.ServerNotFoundError(f"Unable to find the server at {conn.host}") from exc
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        response = httplib2.Response(raw)
        content = httplib2._decompressContent(response, content, self.limit_kwargs)
        return response, content
