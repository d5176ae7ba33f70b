"""`voxserve serve | say | convert | voices | tune | bench | profile`."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, BinaryIO, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from voxserve.bench.command import bench_app
from voxserve.errors import VoxError
from voxserve.obs.profile_report import ProfileDigest, compare, digest, largest_stage_difference, load_trace
from voxserve.obs.trace import RequestTrace
from voxserve.process import limit_malloc_arenas
from voxserve.service.bootstrap import build_access, build_conversion_service, build_speech_service
from voxserve.service.conversion import ConversionJob, ConversionService, Upload, VoiceRegistration
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.settings import Settings, load_settings
from voxserve.storage.keys import SCOPES, KeyLimits, KeyStore
from voxserve.types import Caller

app = typer.Typer(help="voxserve: a self-hosted, OpenAI-compatible speech server.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
profile_app = typer.Typer(help="Read profiler captures (GET /diagnostics/profiler/result).", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
console = Console(stderr=True)

T = TypeVar("T")
TUNE_BATCH_SIZES = (2, 4)
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file.", exists=True)]
VoicesDirOption = Annotated[Path | None, typer.Option("--voices-dir", help="Directory of Piper .onnx voices.")]


def _settings(config: Path | None, **flags: object) -> Settings:
    try:
        return load_settings(config, **flags)
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    voices_dir: VoicesDirOption = None,
    insecure_no_auth: Annotated[
        bool | None, typer.Option("--insecure-no-auth", help="Serve a non-loopback bind without API keys.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from voxserve.api.app import create_app
    from voxserve.api.guard import exposure_problem

    settings = _settings(config, host=host, port=port, voices_dir=voices_dir, insecure_no_auth=insecure_no_auth)
    access = build_access(settings)
    problem = exposure_problem(settings.host, access.required, settings.insecure_no_auth)
    access.store.close()
    if problem:
        console.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(2)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_malloc_arenas(settings.malloc_arena_max)
    application = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(application, host=settings.host, port=settings.port, log_level=settings.log_level)
    )
    state = application.state.voxserve
    state.on_fatal = lambda: setattr(server, "should_exit", True)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # start-up failed; uvicorn has logged why
    if state.fatal is not None:
        console.print(f"[red]error:[/red] {state.fatal}")
        raise typer.Exit(1)


@app.command()
def say(
    text: Annotated[str, typer.Argument(help="What to say.")],
    voice: Annotated[str | None, typer.Option("-v", "--voice", help="Voice id or alias.")] = None,
    response_format: Annotated[str, typer.Option("-f", "--format", help="mp3|opus|aac|flac|wav|pcm.")] = "wav",
    speed: Annotated[float, typer.Option(min=0.25, max=4.0)] = 1.0,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    voices_dir: VoicesDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Synthesize TEXT in-process (no server) and write the audio."""
    settings = _settings(config, voices_dir=voices_dir, warmup=False)
    if response_format not in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        console.print(f"[red]error:[/red] unknown format {response_format!r}")
        raise typer.Exit(2)
    speech = build_speech_service(settings)
    job = SpeechJob(text=text, voice=voice or settings.default_voice, speed=speed, response_format=response_format)
    try:
        if output is None:
            asyncio.run(_write(speech, job, sys.stdout.buffer))
        else:
            with output.open("wb") as sink:
                asyncio.run(_write(speech, job, sink))
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        speech.close()


async def _write(speech: SpeechService, job: SpeechJob, sink: BinaryIO) -> None:
    audio = speech.open(job)
    sink.write(await audio.body())
    sink.flush()
    console.print(f"{audio.trace.audio_s:.2f} s of audio in {audio.trace.finished_s or 0:.2f} s ({audio.trace.voice})")


voices_app = typer.Typer(help="List voices; add or remove custom voices (in the data directory).")
app.add_typer(voices_app, name="voices")


@voices_app.callback(invoke_without_command=True)
def voices(
    context: typer.Context,
    voices_dir: VoicesDirOption = None,
    config: ConfigOption = None,
    engine: Annotated[str | None, typer.Option(help="Only this engine's voices (piper, espeak, custom).")] = None,
) -> None:
    """List the voices the server would offer (built-in and custom)."""
    context.obj = _settings(config, voices_dir=voices_dir, warmup=False)
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


keys_app = typer.Typer(help="API keys (kept as hashes in the data directory).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.callback()
def keys(context: typer.Context, config: ConfigOption = None) -> None:
    context.obj = _settings(config)


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


@app.command()
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
    settings = _settings(config, warmup=False)
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


@app.command()
def tune(
    output: Annotated[Path, typer.Option("-o", "--output", help="Settings file to write.")] = Path("voxserve.toml"),
    corpus: Annotated[Path | None, typer.Option(help="One utterance per line; default: a built-in corpus.")] = None,
    config: ConfigOption = None,
) -> None:
    """Measure every workers x threads split of this machine's cores in-process, then padded batches on the best
    split; write the fastest as TOML."""
    from voxserve.bench.corpus import load_corpus
    from voxserve.bench.inprocess import default_configs, run_in_process
    from voxserve.bench.report import BenchReport, render
    from voxserve.bench.tune import choose, write_settings

    settings = _settings(config)
    texts = load_corpus(corpus)
    results = run_in_process(settings, texts, default_configs(), on_progress=console.log)
    best = max(results, key=lambda result: result.audio_s_per_wall_s)
    for batch_size in TUNE_BATCH_SIZES:
        results += run_in_process(settings, texts, [(best.workers, best.threads)], batch_size, console.log)
    render(BenchReport(target={}, in_process=results), Console())
    tuned = choose(results)
    write_settings(output, tuned, results)
    console.print(f"wrote {output}: {tuned}")


TraceArgument = Annotated[Path, typer.Argument(help="A capture's Chrome trace JSON.", exists=True, dir_okay=False)]
TopOption = Annotated[int, typer.Option("--top", help="Rows per table.", min=1)]


def _read_capture(path: Path) -> ProfileDigest:
    try:
        return digest(load_trace(path))
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


def _ranked_table(title: str, values: dict[str, float], top: int) -> Table:
    table = Table(title=title)
    for column in ("name", "ms / request", "share"):
        table.add_column(column, justify="left" if column == "name" else "right")
    total = sum(values.values()) or 1.0
    for name, ms in sorted(values.items(), key=lambda item: -item[1])[:top]:
        table.add_row(name, f"{ms:.2f}", f"{ms / total:.1%}")
    return table


@profile_app.command("analyze")
def profile_analyze(trace: TraceArgument, top: TopOption = 10) -> None:
    """The top stages, engine operators and Python functions of one capture, per request."""
    captured = _read_capture(trace)
    out = Console()
    out.print(f"{trace}: {captured.requests} request(s)")
    busy = {name: ms for name, ms in captured.stages_ms.items() if name != "queue"}
    out.print(_ranked_table("stages (busy time; queue wait not counted)", busy, top))
    if "queue" in captured.stages_ms:
        out.print(f"queue wait: {captured.stages_ms['queue']:.2f} ms / request")
    if captured.operators_ms:
        out.print(_ranked_table("engine operators", captured.operators_ms, top))
    if captured.functions_ms:
        out.print(_ranked_table("python functions (self time)", captured.functions_ms, top))


@profile_app.command("compare")
def profile_compare(before: TraceArgument, after: TraceArgument, top: TopOption = 10) -> None:
    """Where AFTER spends more or less time than BEFORE, per request, largest change first."""
    differences = compare(_read_capture(before), _read_capture(after))
    out = Console()
    table = Table(title=f"{after.name} vs {before.name} (ms per request)")
    for column in ("kind", "name", "before", "after", "delta", "ratio"):
        table.add_column(column, justify="left" if column in ("kind", "name") else "right")
    for difference in differences[:top]:
        ratio = "-" if difference.ratio is None else f"{difference.ratio:.2f}x"
        table.add_row(difference.kind, difference.name, f"{difference.before_ms:.2f}", f"{difference.after_ms:.2f}",
                      f"{difference.delta_ms:+.2f}", ratio)  # fmt: skip
    out.print(table)
    stage = largest_stage_difference(differences)
    if stage is not None:
        ratio = "" if stage.ratio is None else f", {stage.ratio:.2f}x"
        out.print(f"largest stage difference: {stage.name} ({stage.delta_ms:+.2f} ms per request{ratio})")
