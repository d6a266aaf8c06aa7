"""Start-up checks that need no network: secrets present, state URL well-formed.

`run`, `sync` and `check-config` call `check(settings)` before building anything, so a
missing secret or a mistyped database URL is one line per problem and exit code 2, not a
traceback minutes later or a service that starts and then fails every mailbox. Nothing
here connects anywhere or reads a secret's value beyond checking that it exists; `doctor`
is the command that connects.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from mailtriage.core.config import Settings
from mailtriage.core.errors import ConfigError

__all__ = ["check", "problems", "secret_problems", "state_url_problem"]

SUPPORTED_DATABASES = ("sqlite", "postgresql")


def check(settings: Settings) -> None:
    """Raise ConfigError listing every problem, one per line."""
    found = problems(settings)
    if found:
        raise ConfigError("\n".join(found))


def problems(settings: Settings) -> list[str]:
    """Every problem found without touching the network, as `field: what is wrong`."""
    found = secret_problems(settings)
    state = state_url_problem(settings.state.url)
    if state:
        found.append(state)
    url = settings.runtime.public_url
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            found.append(f"runtime.public_url: {url!r} is not an http(s) URL")
    return found


def state_url_problem(url: str) -> str | None:
    """What is wrong with a state database URL, judged without connecting."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    hint = "use sqlite:///path/to/mailtriage.sqlite or postgresql+psycopg://user@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"state.url: {url!r} is not a database URL; {hint}"
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_DATABASES:
        return f"state.url: unsupported database {parsed.drivername!r}; {hint}"
    try:
        parsed.get_dialect().import_dbapi()
    except ArgumentError:
        return f"state.url: unknown database driver {parsed.drivername!r}; {hint}"
    except ImportError:
        extra = " (pip install 'mailtriage[postgres]')" if backend == "postgresql" else ""
        return f"state.url: the {parsed.get_driver_name()} driver is not installed{extra}"
    if backend == "sqlite":
        return _sqlite_problem(parsed.database)
    return None  # no host is fine: libpq then uses the local socket


def _sqlite_problem(database: str | None) -> str | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    if path.is_dir():
        return f"state.url: {path} is a directory, not a database file"
    parent = path.parent
    if not parent.is_dir():
        return f"state.url: directory {parent} does not exist (create it, or fix the path)"
    if not os.access(parent, os.W_OK) and not path.exists():
        return f"state.url: directory {parent} is not writable"
    return None


def secret_problems(settings: Settings) -> list[str]:
    """Secrets the configured providers and model will read: each must be there."""
    found: list[str] = []
    providers = {m.provider for m in settings.mailboxes}
    uses_llm = settings.llm.configured and settings.effective_classifier in ("llm", "cascade")
    if uses_llm and not settings.llm.is_local:  # a local server is called without a key
        found += _secret("llm.api_key", settings.llm.api_key_env, settings.llm.api_key_file)
    graph = settings.graph
    if "graph" in providers and not graph.anonymous:
        if not graph.tenant_id or not graph.client_id:
            found.append("graph.tenant_id and graph.client_id are required")
        if graph.client_secret_env or graph.client_secret_file:
            found += _secret(
                "graph.client_secret", graph.client_secret_env, graph.client_secret_file
            )
        elif graph.certificate_file:
            found += _secret("graph.certificate", None, graph.certificate_file)
            found += _secret("graph.certificate_password", graph.certificate_password_env, None)
        else:
            found.append(
                "graph: give client_secret_env, client_secret_file or certificate_file "
                "(app-only credentials of the Entra app)"
            )
    gmail = settings.gmail
    if "gmail" in providers and not gmail.anonymous and gmail.auth == "key_file":
        if gmail.service_account_env:
            value = os.environ.get(gmail.service_account_env)
            if value is None:
                found.append(_unset("gmail.service_account_env", gmail.service_account_env))
            elif not value.lstrip().startswith("{"):
                found += _secret("gmail.service_account", None, value)
        elif gmail.service_account_file:
            found += _secret("gmail.service_account", None, gmail.service_account_file)
        else:
            found.append("gmail: set service_account_file or service_account_env")
    push_graph = "graph" in providers and settings.runtime.public_url
    if push_graph and settings.runtime.client_state_env:
        found += _secret("runtime.client_state", settings.runtime.client_state_env, None)
    return found


def _secret(field: str, env: str | None, file: str | None) -> list[str]:
    if env and os.environ.get(env) is None:
        return [_unset(f"{field}_env", env)]
    if file and not env:
        path = Path(file).expanduser()
        if not path.is_file():
            return [f"{field}_file: {path} does not exist"]
        if not os.access(path, os.R_OK):
            return [f"{field}_file: {path} is not readable by this user"]
    return []


def _unset(field: str, env: str) -> str:
    return f"{field}: environment variable {env} is not set"
