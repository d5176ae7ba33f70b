"""`voxserve keys`: create, list and revoke API keys in the data directory's key store."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxserve.cli.config import ConfigOption, load_settings_or_exit
from voxserve.cli.console import console
from voxserve.storage.keys import SCOPES, KeyLimits, KeyStore

keys_app = typer.Typer(help="API keys (kept as hashes in the data directory).", no_args_is_help=True)


@keys_app.callback()
def keys(context: typer.Context, config: ConfigOption = None) -> None:
    context.obj = load_settings_or_exit(config)


@keys_app.command("create")
def keys_create(
    context: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    scope: Annotated[list[str], typer.Option("--scope", help=f"One of {', '.join(SCOPES)}; repeat for more.")],
    requests_per_minute: Annotated[int | None, typer.Option(min=0, help="0 = no limit; default: the server's.")] = None,
    max_streams: Annotated[int | None, typer.Option(min=0, help="Concurrent requests; 0 = no limit.")] = None,
    chars_per_day: Annotated[
        int | None, typer.Option(min=0, help="Input characters per UTC day; 0 = no limit.")
    ] = None,
) -> None:
    """Create a key and print it once (only its hash is kept)."""
    with _key_store(context) as store:
        try:
            key, secret = store.create(name, tuple(scope), KeyLimits(requests_per_minute, max_streams, chars_per_day))
        except (ValueError, sqlite3.IntegrityError) as exc:
            console.print(f"[red]error:[/red] {exc if isinstance(exc, ValueError) else f'a key named {name!r} exists'}")
            raise typer.Exit(2) from exc
    console.print(f"created key {key.id} ({key.name}) with scopes {', '.join(key.scopes)}; it is shown only once:")
    print(secret)


@keys_app.command("ls")
def keys_ls(context: typer.Context) -> None:
    """List keys (never their secrets)."""
    with _key_store(context) as store:
        table = Table("id", "name", "scopes", "created", "rpm", "streams", "chars/day", title="API keys")
        for key in store.list():
            limits = (key.limits.requests_per_minute, key.limits.max_streams, key.limits.chars_per_day)
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at))
            table.add_row(
                key.id, key.name, ",".join(key.scopes), created, *("default" if v is None else str(v) for v in limits)
            )
        Console().print(table)


@keys_app.command("rm")
def keys_rm(context: typer.Context, key: Annotated[str, typer.Argument(help="Key id or name.")]) -> None:
    """Revoke a key; requests with it fail from the next one on."""
    with _key_store(context) as store:
        removed = store.delete(key)
    if removed is None:
        console.print(f"[red]error:[/red] no key {key!r}")
        raise typer.Exit(1)
    console.print(f"deleted key {removed.id} ({removed.name})")


@contextmanager
def _key_store(context: typer.Context) -> Iterator[KeyStore]:
    store = KeyStore(context.obj.data_dir)
    try:
        yield store
    finally:
        store.close()
