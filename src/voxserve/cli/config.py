"""The `--config` and `--voices-dir` options commands share, and the settings they load into."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxserve.cli.console import console
from voxserve.errors import VoxError
from voxserve.settings import Settings, load_settings

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file.", exists=True)]
VoicesDirOption = Annotated[Path | None, typer.Option("--voices-dir", help="Directory of Piper .onnx voices.")]


def load_settings_or_exit(config: Path | None, **flags: object) -> Settings:
    """The settings from `config`, the environment and `flags`; invalid ones are reported and exit 2."""
    try:
        return load_settings(config, **flags)
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
