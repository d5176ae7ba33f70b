"""`voxserve job`: long-form jobs on a server over its HTTP API (or `--in-process`, on one served in this process)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column, Table

from voxserve.cli.config import ConfigOption, load_settings_or_exit
from voxserve.cli.console import console
from voxserve.cli.serving import uvicorn_server
from voxserve.service.jobs import CONTENT_TYPES_WITH_M4B

job_app = typer.Typer(help="Long-form jobs (books, batches) on a server: submit, follow, fetch.", no_args_is_help=True)
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
    settings = load_settings_or_exit(config, host="127.0.0.1", warmup=False, log_level="warning")
    server, state = uvicorn_server(settings, 0)
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
