"""`mailtriage init`: write a first configuration from department templates.

The templates (mailtriage/data/departments.toml) hold, for the usual departments of a
company, a description and a dozen varied examples in French and English (with German,
Spanish and Italian ones), so the embedded classifier routes most mail on day one.
Interactive when a question is left open and the terminal allows it; every answer can
be given as a flag. The written file is validated as `check-config` would, then `init`
offers `learn` on the folders or labels staff already sort into.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from mailtriage.cli import console, user_errors
from mailtriage.core.config import Settings, parse_settings
from mailtriage.core.errors import ConfigError
from mailtriage.data import DEPARTMENTS

REVIEW_NAMES = {"fr": "À vérifier", "en": "To review"}
REVIEW_DESCRIPTION = (
    "Tout message qui ne relève clairement d'aucune autre catégorie, ou dont le contenu est "
    "ambigu. Anything that fits no other category or is ambiguous."
)


def load_departments() -> list[dict[str, Any]]:
    """The department templates, in file order."""
    data = tomllib.loads(DEPARTMENTS.read_text(encoding="utf-8"))
    departments: list[dict[str, Any]] = data["department"]
    return departments


def _string(value: str) -> str:
    """A TOML string: multi-line literal-free basic string when it has line breaks."""
    if "\n" in value and '"""' not in value and "\\" not in value:
        return f'"""{value}"""'
    return json.dumps(value, ensure_ascii=False)


def render_config(
    departments: list[dict[str, Any]],
    *,
    provider: str,
    mailbox: str,
    lang: str = "fr",
    forward: dict[str, str] | None = None,
    llm_model: str = "",
    llm_url: str = "http://localhost:11434/v1",
    state_url: str = "sqlite:///mailtriage.sqlite",
    tenant_id: str = "",
    client_id: str = "",
    service_account_file: str = "/etc/mailtriage/service-account.json",
) -> str:
    """The TOML text of a configuration routing `mailbox` into `departments`."""
    forward = forward or {}
    classifier = "cascade" if llm_model else "embedded"
    out = [
        "# Written by `mailtriage init`. Check it with `mailtriage check-config`, try it",
        "# with `mailtriage sync --dry-run --since 2d`, teach it with `mailtriage learn`.",
        "",
        "dry_run = false",
        "# embedded: the offline model; cascade: the embedded model first, the LLM when unsure",
        "# (and for what needs knowledge the embedded model lacks: whose invoice it is, a pitch",
        "# or a request for a quote).",
        f'classifier = "{classifier}"',
        "# Below this confidence a message goes to review. `mailtriage learn` and",
        "# `mailtriage eval --target-precision 0.95` say which value your history supports.",
        "min_confidence = 0.5",
        'review_category = "review"',
        "store_text = false",
        "",
        "[llm]",
        f"base_url = {_string(llm_url)}",
        f"model = {_string(llm_model)}",
        'api_key_env = "MAILTRIAGE_LLM_KEY"',
        "",
        "[state]",
        f"url = {_string(state_url)}",
        "",
        "[[mailbox]]",
        f"provider = {_string(provider)}",
        f"address = {_string(mailbox)}",
        "",
    ]
    if provider == "graph":
        out += [
            "[graph]",
            f"tenant_id = {_string(tenant_id)}   # your Entra ID tenant",
            f"client_id = {_string(client_id)}   # the app registration (manifest/m365/INSTALL.md)",
            'client_secret_env = "MAILTRIAGE_GRAPH_SECRET"   # or certificate_file',
            "",
        ]
    else:
        out += [
            "[gmail]",
            f"service_account_file = {_string(service_account_file)}",
            "",
        ]
    for dept in departments:
        name = dept["name"] if lang == "fr" else dept["name_en"]
        out += [
            "[[category]]",
            f"key = {_string(dept['key'])}",
            f"name = {_string(name)}",
            f"description = {_string(dept['description'])}",
            "examples = [",
            *(f"  {_string(e)}," for e in dept["examples"]),
            "]",
            "[category.actions]",
            f"label = {_string(name)}",
            f"move_to = {_string(dept['folder'])}",
        ]
        if dept["key"] in forward:
            out.append(f"forward_to = [{_string(forward[dept['key']])}]")
        if dept.get("mark_read"):
            out.append("mark_read = true")
        out += [f"color = {_string(dept['color'])}", ""]
    review_name = REVIEW_NAMES["fr" if lang == "fr" else "en"]
    out += [
        "[[category]]",
        'key = "review"',
        f"name = {_string(review_name)}",
        f"description = {_string(REVIEW_DESCRIPTION)}",
        "[category.actions]",
        f"label = {_string(review_name)}",
        'color = "preset1"',
        "",
    ]
    return "\n".join(out)


def validate(text: str, source: str) -> Settings:
    """Parse and validate the written text exactly as `check-config` reads a file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - we wrote it
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_settings(data, source)


def _parse_forward(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, address = value.partition("=")
        if not sep or not key.strip() or not address.strip():
            raise typer.BadParameter(f"{value!r}: use KEY=ADDRESS", param_hint="--forward")
        out[key.strip()] = address.strip()
    return out


def init(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")] = Path(
        "mailtriage.toml"
    ),
    departments: Annotated[
        str | None,
        typer.Option(help="Comma-separated department keys (default: ask, or all)."),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="graph or gmail.")] = None,
    mailbox: Annotated[str | None, typer.Option(help="The shared mailbox's address.")] = None,
    lang: Annotated[str, typer.Option(help="Language of category names: fr or en.")] = "fr",
    forward: Annotated[
        list[str] | None,
        typer.Option(help="KEY=ADDRESS: forward that department's mail (repeatable)."),
    ] = None,
    llm_model: Annotated[
        str, typer.Option(help="An LLM for the cascade (empty: embedded only).")
    ] = "",
    llm_url: Annotated[str, typer.Option(help="OpenAI-compatible endpoint.")] = (
        "http://localhost:11434/v1"
    ),
    tenant_id: Annotated[str | None, typer.Option(help="Graph: the Entra ID tenant.")] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Graph: the app registration's client id.")
    ] = None,
    service_account_file: Annotated[
        str, typer.Option(help="Gmail: the service account's JSON key file.")
    ] = "/etc/mailtriage/service-account.json",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    learn: Annotated[
        bool | None,
        typer.Option(help="Then learn from the folders staff use (default: ask)."),
    ] = None,
) -> None:
    """Write a configuration from templates of the usual departments."""
    templates = load_departments()
    known = [d["key"] for d in templates]
    interactive = sys.stdin.isatty()
    if departments is None and interactive:
        console.print("departments: " + ", ".join(f"{d['key']} ({d['name']})" for d in templates))
        departments = typer.prompt("which ones (comma-separated)", default=",".join(known))
    chosen = [k.strip() for k in (departments or ",".join(known)).split(",") if k.strip()]
    unknown = [k for k in chosen if k not in known]
    if unknown or not chosen:
        raise typer.BadParameter(
            f"unknown departments {unknown}; choose among {', '.join(known)}",
            param_hint="--departments",
        )
    if provider is None:
        provider = typer.prompt("provider (graph or gmail)", default="graph") if interactive else ""
    if provider not in ("graph", "gmail"):
        raise typer.BadParameter("use graph or gmail", param_hint="--provider")
    if mailbox is None:
        if not interactive:
            raise typer.BadParameter(
                "the shared mailbox's address is needed", param_hint="--mailbox"
            )
        mailbox = typer.prompt("shared mailbox address (e.g. contact@example.fr)")
    if provider == "graph":
        if tenant_id is None:
            tenant_id = typer.prompt("Entra ID tenant id") if interactive else ""
        if client_id is None:
            client_id = typer.prompt("app registration client id") if interactive else ""
        if not tenant_id or not client_id:
            raise typer.BadParameter(
                "a Graph mailbox needs --tenant-id and --client-id (manifest/m365/INSTALL.md)",
                param_hint="--tenant-id",
            )
    if lang not in ("fr", "en"):
        raise typer.BadParameter("use fr or en", param_hint="--lang")
    if output.exists() and not force:
        raise ConfigError(f"{output}: exists; use --force to overwrite it")
    fwd = _parse_forward(forward or [])
    stray = sorted(set(fwd) - set(chosen))
    if stray:
        raise typer.BadParameter(f"not chosen departments: {stray}", param_hint="--forward")
    text = render_config(
        [d for d in templates if d["key"] in chosen],
        provider=provider,
        mailbox=mailbox,
        lang=lang,
        forward=fwd,
        llm_model=llm_model,
        llm_url=llm_url,
        tenant_id=tenant_id or "",
        client_id=client_id or "",
        service_account_file=service_account_file,
    )
    settings = validate(text, str(output))
    output.write_text(text, encoding="utf-8")
    examples = sum(len(c.examples) for c in settings.categories)
    console.print(
        f"wrote {output}: {len(settings.categories) - 1} departments and review, "
        f"{examples} examples; classifier {settings.effective_classifier}",
        highlight=False,
    )
    if learn is None:
        learn = interactive and typer.confirm(
            "learn now from the folders or labels staff already sort into? "
            "(needs the provider credentials in the file)",
            default=False,
        )
    if learn:
        from mailtriage.cli.learn import learn as learn_command

        learn_command(mailbox=settings.mailboxes[0].address, config=output)
    else:
        console.print(
            f"next: set the secret named in the file, `mailtriage doctor -c {output}`, then "
            f"`mailtriage learn -c {output} --mailbox {settings.mailboxes[0].address}`",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("init")(user_errors(init))
