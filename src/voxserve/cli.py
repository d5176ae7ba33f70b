"""`voxserve serve | say | convert | voices | keys | job | tune | bench | profile`."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NoReturn, TypeVar
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column, Table

from voxserve.bench.command import bench_app
from voxserve.errors import VoxError
from voxserve.obs.profile_report import ProfileDigest, compare, digest, largest_stage_difference, load_trace
from voxserve.obs.trace import RequestTrace
from voxserve.process import limit_malloc_arenas
from voxserve.service.bootstrap import build_access, build_conversion_service, build_speech_service
from voxserve.service.conversion import ConversionJob, ConversionService, Upload, VoiceRegistration
from voxserve.service.jobs import CONTENT_TYPES_WITH_M4B
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.settings import Settings, load_settings
from voxserve.storage.keys import SCOPES, KeyLimits, KeyStore
from voxserve.types import Caller

if TYPE_CHECKING:
    import uvicorn

    from voxserve.api.state import AppState

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
    server, state = _uvicorn_server(settings, settings.port)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # start-up failed; uvicorn has logged why
    if state.fatal is not None:
        console.print(f"[red]error:[/red] {state.fatal}")
        raise typer.Exit(1)


def _uvicorn_server(settings: Settings, port: int) -> tuple[uvicorn.Server, AppState]:
    """The app built from `settings`, served by uvicorn on `settings.host` and `port` (0: any free one); a failed
    warm-up stops it (then `state.fatal` says why)."""
    import uvicorn

    from voxserve.api.app import create_app

    application = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(application, host=settings.host, port=port, log_level=settings.log_level))
    state: AppState = application.state.voxserve
    state.on_fatal = lambda: setattr(server, "should_exit", True)
    return server, state


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


job_app = typer.Typer(help="Long-form jobs (books, batches) on a server: submit, follow, fetch.", no_args_is_help=True)
app.add_typer(job_app, name="job")
JOBS_PATH = "/v1/audio/jobs"
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # job events come at least once a second; audio once a segment
FORMAT_BY_CONTENT_TYPE = {media: fmt for fmt, media in CONTENT_TYPES_WITH_M4B.items()} | {"application/zip": "zip"}
UrlOption = Annotated[str, typer.Option("--url", help="The voxserve server.")]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="VOXSERVE_API_KEY", help="Bearer key, where the server needs one.")
]
JobIdArgument = Annotated[str, typer.Argument(help="Job id.")]


@job_app.command("submit")
def job_submit(
    file: Annotated[Path, typer.Argument(help=".txt, .md, .epub, or .jsonl batch items.", exists=True, dir_okay=False)],
    voice: Annotated[str, typer.Option("-v", "--voice", help="Voice id or alias.")] = "alloy",
    model: Annotated[str, typer.Option(help="tts-1 (the default voice's engine), piper or espeak.")] = "tts-1",
    response_format: Annotated[str, typer.Option("-f", "--format", help="mp3|opus|aac|flac|wav|pcm|m4b.")] = "mp3",
    speed: Annotated[float, typer.Option(min=0.25, max=4.0)] = 1.0,
    title: Annotated[str, typer.Option(help="Book title (default: the file's name).")] = "",
    chapter_pattern: Annotated[str | None, typer.Option(help="Regex: lines that start a chapter.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress, then download the result.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="With --wait: file to write.")] = None,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="No server: run voxserve in this process (implies --wait).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Upload FILE as a job and print its id; --wait follows it and downloads the finished audio."""
    fields = {"voice": voice, "model": model, "response_format": response_format, "speed": str(speed), "title": title}
    if chapter_pattern is not None:
        fields["chapter_pattern"] = chapter_pattern
    with _job_server(url, config, in_process=in_process) as server_url, _client(server_url, api_key) as client:
        job = _json(client, "POST", JOBS_PATH, data=fields, files={"file": (file.name, file.read_bytes())})
        print(job["id"], flush=True)
        if wait or in_process:
            _finish(client, job, output, in_process=in_process)


def _finish(client: httpx.Client, job: dict[str, Any], output: Path | None, *, in_process: bool) -> None:
    """Follow the job to its end and download its audio; exit 1 if it failed or was cancelled, 130 on Ctrl-C."""
    try:
        finished = _watch(client, job)
    except KeyboardInterrupt:
        console.print(_left_running(job["id"], in_process=in_process))
        raise typer.Exit(130) from None
    if finished["status"] != "completed":
        _fail(finished["error"]["message"] if finished["error"] else f"job {job['id']} was {finished['status']}")
    written = _download(client, _result_path(finished), output, job["id"])
    console.print(f"{_duration(finished['progress']['audio_seconds'])} of audio written to {written}")


@job_app.command("ls")
def job_ls(
    status: Annotated[str | None, typer.Option(help="queued|running|completed|failed|cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List jobs, newest first."""
    params: dict[str, str | int] = {"limit": limit} if status is None else {"limit": limit, "status": status}
    with _client(url, api_key) as client:
        listed = _json(client, "GET", JOBS_PATH, params=params)
    # The id stays whole on a narrow terminal: it is what the other commands take.
    table = Table(Column("id", no_wrap=True), "kind", "status", "progress", "audio min", "created", title="jobs")
    for job in listed["data"]:
        progress, created = job["progress"], _local_time(job["created_at"])
        minutes = f"{progress['audio_seconds'] / 60:.1f}"
        table.add_row(job["id"], job["kind"], job["status"], _percent(progress), minutes, created)
    Console().print(table)


@job_app.command("status")
def job_status(
    job_id: JobIdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="The job object as the API returns it.")] = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """One job: status, progress, error, chapters or items."""
    with _client(url, api_key) as client:
        job = _json(client, "GET", f"{JOBS_PATH}/{job_id}")
    if as_json:
        print(json.dumps(job, indent=2))
    else:
        Console().print(_job_table(job))


@job_app.command("download")
def job_download(
    job_id: JobIdArgument,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: the job's).")] = None,
    item: Annotated[str | None, typer.Option(help="A batch item's id (default: all items as a ZIP).")] = None,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Download a job's audio; a running book streams what is made so far, then the rest as it is made."""
    with _client(url, api_key) as client:
        if item is None:
            path = _result_path(_json(client, "GET", f"{JOBS_PATH}/{job_id}"))
        else:
            path = f"{JOBS_PATH}/{job_id}/items/{quote(item, safe='')}/audio"
        written = _download(client, path, output, item or job_id)
    console.print(f"wrote {written}")


@job_app.command("cancel")
def job_cancel(job_id: JobIdArgument, url: UrlOption = DEFAULT_SERVER_URL, api_key: ApiKeyOption = None) -> None:
    """Stop a queued or running job; the audio made so far stays downloadable."""
    with _client(url, api_key) as client:
        job = _json(client, "POST", f"{JOBS_PATH}/{job_id}/cancel")
    console.print(f"job {job['id']} is {job['status']}")


@job_app.command("rm")
def job_rm(job_id: JobIdArgument, url: UrlOption = DEFAULT_SERVER_URL, api_key: ApiKeyOption = None) -> None:
    """Delete a job and its audio (a running one is stopped first)."""
    with _client(url, api_key) as client:
        _json(client, "DELETE", f"{JOBS_PATH}/{job_id}")
    console.print(f"deleted job {job_id}")


def _client(url: str, api_key: str | None) -> httpx.Client:
    headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
    return httpx.Client(base_url=url, headers=headers, timeout=HTTP_TIMEOUT)


@contextmanager
def _exchange(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
    """One request, its body streamed. The one place a failed request becomes a message and exit status 1: the
    server's error message, or which URL could not be reached."""
    try:
        with client.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
                _fail(_error_message(response))
            yield response
    except httpx.ConnectError as exc:
        _fail(f"cannot connect to voxserve at {client.base_url} ({exc}); start it with `voxserve serve` or pass --url")
    except httpx.HTTPError as exc:
        _fail(f"{method} {client.base_url.join(path)} failed: {exc or type(exc).__name__}")


def _json(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    with _exchange(client, method, path, **kwargs) as response:
        response.read()
        return response.json()


def _error_message(response: httpx.Response) -> str:
    """The OpenAI-shaped `error.message`, else the status and the start of the body (a proxy's page)."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} from {response.url}: {response.text[:200]}"


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(1)


def _watch(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """Follow the job's events with a progress bar until it finishes; the job as it finished."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    with (
        Progress(*columns, console=console) as progress,
        _exchange(client, "GET", f"{JOBS_PATH}/{job['id']}/events") as response,
    ):
        task = progress.add_task(job["id"], total=None, note="")
        for event in _events(response):
            shown = event["job"]["progress"]
            eta = "" if shown["eta_seconds"] is None else f", ETA {_duration(shown['eta_seconds'])}"
            note = f"segments, {_duration(shown['audio_seconds'])} of audio{eta}"
            progress.update(task, completed=shown["segments_done"], total=shown["segments_total"], note=note)
            if event["type"] != "job.progress":
                return event["job"]
    _fail(f"the event stream of job {job['id']} ended before the job finished")


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The `data:` payloads of a Server-Sent Events body, lazily: reading starts on iteration."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[len("data:") :])


def _left_running(job_id: str, *, in_process: bool) -> str:
    if in_process:
        return (f"stopped; job {job_id} stays in the data directory and resumes when voxserve next serves it "
                f"(`voxserve serve`, then `voxserve job cancel {job_id}` to drop it)")  # fmt: skip
    return f"job {job_id} keeps running; `voxserve job cancel {job_id}` stops it"


def _result_path(job: dict[str, Any]) -> str:
    return f"{JOBS_PATH}/{job['id']}/items.zip" if job["kind"] == "batch" else f"{JOBS_PATH}/{job['id']}/audio"


def _download(client: httpx.Client, path: str, output: Path | None, stem: str) -> Path:
    """Stream `path` into `output` (default: the server's file name, else `stem` and the format's extension); a
    download cut short leaves no partial file behind."""
    with _exchange(client, "GET", path) as response:
        target = output or _file_name(response, stem)
        try:
            with target.open("wb") as sink:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return target


def _file_name(response: httpx.Response, stem: str) -> Path:
    """The attachment name a finished job's file comes with; a streamed one has none, so `stem.<format>`."""
    header = Message()
    header["content-disposition"] = response.headers.get("content-disposition", "")
    name = header.get_filename()
    if name:
        return Path(Path(name).name)  # never a path the server chose
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    return Path(f"{stem}.{FORMAT_BY_CONTENT_TYPE.get(media_type, 'bin')}")


def _job_table(job: dict[str, Any]) -> Table:
    progress = job["progress"]
    rows = {
        "id": job["id"], "kind": job["kind"], "status": job["status"], "created": _local_time(job["created_at"]),
        "voice": f"{job.get('voice')} ({job.get('model')}), {job.get('response_format')}, speed {job.get('speed')}",
        "segments": f"{progress['segments_done']}/{progress['segments_total']} ({_percent(progress)})",
        "characters": f"{progress['chars_done']}/{progress['chars_total']}",
        "audio": _duration(progress["audio_seconds"]),
    }  # fmt: skip
    if progress["eta_seconds"] is not None:
        rows["eta"] = f"{_duration(progress['eta_seconds'])} at {progress['chars_per_second']} chars/s"
    if job["error"]:
        rows["error"] = f"{job['error']['message']} ({job['error']['code']})"
    if "chapters" in job:
        rows["chapters"] = ", ".join(chapter["title"] or str(chapter["number"]) for chapter in job["chapters"])
    if "items" in job:
        rows["items"] = ", ".join(item["id"] for item in job["items"])
    table = Table(show_header=False, title=f"job {job['id']}")
    for field, value in rows.items():
        table.add_row(field, escape(str(value)))
    return table


def _percent(progress: dict[str, Any]) -> str:
    total = progress["segments_total"]
    return f"{progress['segments_done'] / total:.0%}" if total else "-"


def _duration(seconds: float) -> str:
    """`h:mm:ss`, or `m:ss` under an hour."""
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


def _local_time(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch_s))


@contextmanager
def _job_server(url: str, config: Path | None, *, in_process: bool) -> Iterator[str]:
    """`url`, or with `in_process` the URL of voxserve's app served in this process until the block ends."""
    if not in_process:
        yield url
        return
    with _in_process_server(config) as served:
        yield served


@contextmanager
def _in_process_server(config: Path | None) -> Iterator[str]:
    """The app `serve` runs, from the same settings sources, on 127.0.0.1 (a free port) in a background thread;
    stopped when the block ends. Jobs it leaves unfinished stay in the data directory and resume at its next
    start. Quiet (warnings only), and not warmed up: a job's first segment warms the engine."""
    settings = _settings(config, host="127.0.0.1", warmup=False, log_level="warning")
    server, state = _uvicorn_server(settings, 0)
    thread = threading.Thread(target=server.run, name="voxserve-in-process", daemon=True)
    thread.start()
    try:
        while not (server.started and state.ready):
            if not thread.is_alive():
                _fail(state.fatal or "the in-process server did not start (see the log above)")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
