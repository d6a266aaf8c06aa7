"""The one exception tree of mailtriage.

    MailtriageError
    ├── ConfigError            bad configuration; names the file and the field
    ├── MessageParseError      a message that cannot be turned into text; carries a skip reason
    ├── ClassifierError        the model could not give a usable answer (retry later)
    ├── LedgerError            the state database is unreachable or inconsistent
    │   └── DatabaseUnavailableError  the database cannot be reached at all (start-up)
    ├── ListenError            the webhook address cannot be listened on (port in use)
    ├── MailboxBusyError       another mailtriage process holds the mailbox's lease
    └── ConnectorError         the mail provider refused or failed
        ├── AuthError          credentials rejected, token not obtainable
        ├── AccessDeniedError  the app may not touch this mailbox (scope/delegation)
        ├── ThrottledError     provider asked us to slow down; carries retry_after_s
        ├── CursorExpiredError delta/history token no longer valid: resync needed
        ├── NotFoundError      the message or folder is gone
        └── OutcomeUnknownError a write may or may not have happened (timeout, 5xx, lost
                               response): look for its evidence before doing it again

Connectors translate SDK exceptions into this tree at their edge so the pipeline can choose
between retry, skip-mailbox and record-as-failed without knowing any SDK.

`exit_code` is what the command line exits with when the error stops a command (README,
"Exit codes"): 1 by default, 2 for configuration, 3 for an unreachable database, 4 for a
webhook address that cannot be listened on.
"""

from __future__ import annotations


class MailtriageError(Exception):
    """Base of every error mailtriage raises on purpose."""

    exit_code = 1


class ConfigError(MailtriageError):
    """Invalid configuration. The message names the file and the field."""

    exit_code = 2


class MessageParseError(MailtriageError):
    """A message could not be parsed; `reason` is the short, recorded skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClassifierError(MailtriageError):
    """The classifier failed in a way that should be retried later."""


class LedgerError(MailtriageError):
    """The state database failed."""


class DatabaseUnavailableError(LedgerError):
    """The state database cannot be reached (server down, refused, wrong credentials)."""

    exit_code = 3


class ListenError(MailtriageError):
    """The webhook's host and port cannot be listened on."""

    exit_code = 4


class MailboxBusyError(MailtriageError):
    """Another process (usually `mailtriage run`) is working on this mailbox."""


class ConnectorError(MailtriageError):
    """A mail provider call failed."""

    def __init__(self, message: str, *, mailbox: str | None = None) -> None:
        super().__init__(message)
        self.mailbox = mailbox


class AuthError(ConnectorError):
    """Authentication failed: credentials wrong, expired or not granted."""


class AccessDeniedError(ConnectorError):
    """The app is not allowed to access this mailbox; the message says how to fix it."""


class ThrottledError(ConnectorError):
    """The provider throttled us and retries were exhausted."""

    def __init__(
        self, message: str, *, mailbox: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, mailbox=mailbox)
        self.retry_after_s = retry_after_s


class CursorExpiredError(ConnectorError):
    """The stored delta/history cursor is no longer valid; a bounded resync is needed."""


class NotFoundError(ConnectorError):
    """The message, folder or label no longer exists."""


class OutcomeUnknownError(ConnectorError):
    """A non-idempotent write (send, forward, move) may or may not have taken effect.

    Raised for timeouts, dropped connections and 5xx answers to such writes: the provider
    does not say the request was not processed, so it is never retried blindly. The next
    attempt looks for the evidence first (the sent copy, the draft, where the message is).
    """
