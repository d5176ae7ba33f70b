"""Speech in-process, no server: `voxserve say`, `voxserve convert`, and `voxserve voices` (list, add, rm)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, BinaryIO, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from voxserve.cli.config import ConfigOption, VoicesDirOption, load_settings_or_exit
from voxserve.cli.console import console
from voxserve.errors import VoxError
from voxserve.obs.trace import RequestTrace
from voxserve.service.bootstrap import build_conversion_service, build_speech_service
from voxserve.service.captions import CAPTION_FORMATS, CAPTION_MAX_CHARS, caption_cues, render
from voxserve.service.conversion import ConversionJob, ConversionService, Upload, VoiceRegistration
from voxserve.service.response import AudioResponse
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.service.timestamps import Timestamps
from voxserve.settings import Settings
from voxserve.types import Caller

T = TypeVar("T")
voices_app = typer.Typer(help="List voices; add or remove custom voices (in the data directory).")


def say(
    text: Annotated[str, typer.Argument(help="What to say.")],
    voice: Annotated[str | None, typer.Option("-v", "--voice", help="Voice id or alias.")] = None,
    response_format: Annotated[str, typer.Option("-f", "--format", help="mp3|opus|aac|flac|wav|pcm.")] = "wav",
    speed: Annotated[float, typer.Option(min=0.25, max=4.0)] = 1.0,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    captions: Annotated[
        Path | None, typer.Option(help="Also write captions here: .srt, .vtt or .json, timed by the model.")
    ] = None,
    caption_max_chars: Annotated[int, typer.Option(min=10, max=200, help="Longest caption line.")] = CAPTION_MAX_CHARS,
    voices_dir: VoicesDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Synthesize TEXT in-process (no server) and write the audio."""
    settings = load_settings_or_exit(config, voices_dir=voices_dir, warmup=False)
    if response_format not in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        console.print(f"[red]error:[/red] unknown format {response_format!r}")
        raise typer.Exit(2)
    caption_format = captions.suffix.lstrip(".").lower() if captions else None
    if caption_format is not None and caption_format not in CAPTION_FORMATS:
        console.print(f"[red]error:[/red] captions must be .srt, .vtt or .json, not {captions}")
        raise typer.Exit(2)
    speech = build_speech_service(settings)
    job = SpeechJob(
        text=text, voice=voice or settings.default_voice, speed=speed, response_format=response_format,
        timestamps="word" if captions else "none",
    )  # fmt: skip
    try:
        if output is None:
            audio = asyncio.run(_write(speech, job, sys.stdout.buffer))
        else:
            with output.open("wb") as sink:
                audio = asyncio.run(_write(speech, job, sink))
        if captions is not None and caption_format is not None:
            words = Timestamps.join(audio.timestamps or []).words
            cues = caption_cues(text, words, audio.trace.audio_s, caption_max_chars)
            captions.write_text(render(cues, caption_format), encoding="utf-8")
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        speech.close()


async def _write(speech: SpeechService, job: SpeechJob, sink: BinaryIO) -> AudioResponse:
    audio = speech.open(job)
    sink.write(await audio.body())
    sink.flush()
    console.print(f"{audio.trace.audio_s:.2f} s of audio in {audio.trace.finished_s or 0:.2f} s ({audio.trace.voice})")
    return audio


def convert(
    source: Annotated[Path, typer.Argument(help="Recording to convert.", exists=True, dir_okay=False)],
    voice: Annotated[str | None, typer.Option("-v", "--voice", help="Target voice: custom or built-in.")] = None,
    target: Annotated[Path | None, typer.Option(help="Target speaker's recording (instead of --voice).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")] = Path("converted.wav"),
    response_format: Annotated[str, typer.Option("-f", "--format", help="mp3|opus|aac|flac|wav|pcm.")] = "wav",
    pitch_shift: Annotated[float, typer.Option(help="Semitones on top of the target's pitch.", min=-24, max=24)] = 0.0,
    formant_shift: Annotated[float, typer.Option(help="Scale on the vocal-tract warp.", min=0.5, max=2.0)] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Convert SOURCE in-process (no server) toward a voice and write the audio."""
    settings = load_settings_or_exit(config, warmup=False)
    job = ConversionJob(
        source=Upload(source.read_bytes()),
        voice=voice,
        target=Upload(target.read_bytes()) if target else None,
        response_format=response_format,
        pitch_shift=pitch_shift,
        formant_shift=formant_shift,
    )

    async def run(conversion: ConversionService) -> float:
        stream = await conversion.open(job, _untraced())
        output.write_bytes(await stream.body())
        return stream.trace.audio_s

    audio_s = _with_conversion(settings, run)
    console.print(f"{audio_s:.2f} s of audio written to {output}")


@voices_app.callback(invoke_without_command=True)
def voices(
    context: typer.Context,
    voices_dir: VoicesDirOption = None,
    config: ConfigOption = None,
    engine: Annotated[str | None, typer.Option(help="Only this engine's voices (piper, espeak, custom).")] = None,
) -> None:
    """List the voices the server would offer (built-in and custom)."""
    context.obj = load_settings_or_exit(config, voices_dir=voices_dir, warmup=False)
    if context.invoked_subcommand is not None:
        return
    speech = build_speech_service(context.obj)
    try:
        table = Table("id", "engine", "language", "sample rate", title="voices")
        for info in speech.registry.voices():
            if engine is None or info.engine == engine:
                table.add_row(info.id, info.engine, info.language, str(info.sample_rate))
        for custom in speech.library.list(Caller()) if speech.library and engine in (None, "custom") else []:
            table.add_row(f"{custom.id} ({custom.name})", "custom", f"via {custom.base_voice}", str(custom.sample_rate))
        Console().print(table)
    finally:
        speech.close()


@voices_app.command("add")
def voices_add(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The new voice's name.")],
    reference: Annotated[Path, typer.Argument(help="A 5-60 s recording of the speaker.", exists=True, dir_okay=False)],
    base_voice: Annotated[str | None, typer.Option(help="Built-in voice that speaks (default: closest pitch).")] = None,
) -> None:
    """Register a custom voice from a reference recording."""
    upload = Upload(reference.read_bytes())
    voice = _with_conversion(
        context.obj,
        lambda conversion: conversion.register_voice(
            VoiceRegistration(name, upload, base_voice=base_voice), _untraced()
        ),
    )
    console.print(f"added {voice.id} ({voice.name}), spoken by {voice.base_voice}")


@voices_app.command("rm")
def voices_rm(context: typer.Context, voice: Annotated[str, typer.Argument(help="Custom voice id or name.")]) -> None:
    """Delete a custom voice."""
    removed = _with_conversion(context.obj, lambda conversion: _async(conversion.library.delete, voice, Caller()))
    console.print(f"deleted {removed.id} ({removed.name})")


def _with_conversion(settings: Settings, work: Callable[[ConversionService], Awaitable[T]]) -> T:
    """Run `work` against an in-process conversion service, reporting a client error and exiting 1."""
    speech = build_speech_service(settings)
    conversion = build_conversion_service(speech, settings)

    async def run() -> T:
        try:
            return await work(conversion)
        finally:
            await conversion.close()

    try:
        return asyncio.run(run())
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        speech.close()


def _untraced() -> RequestTrace:
    return RequestTrace(enabled=False)


async def _async(work: Callable[..., T], *args: object) -> T:
    return await asyncio.to_thread(work, *args)
