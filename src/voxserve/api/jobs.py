"""`/v1/audio/jobs`: long-form speech (books, batches) as background jobs: submit, watch, download, cancel.

A job belongs to the key that made it: other keys neither see nor touch it (admins see all)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from voxserve.api.access import metered, require
from voxserve.api.forms import read_body
from voxserve.api.protocol import JobCreateRequest, JobStatus
from voxserve.api.state import get_jobs, get_speech, get_trace
from voxserve.api.streaming import audio_response, streaming_response
from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.captions import CAPTION_FORMATS
from voxserve.service.job_audio import caption_paths, chapter_captions
from voxserve.service.jobs import JobService, Progress
from voxserve.service.limits import Lease
from voxserve.service.response import AudioResponse
from voxserve.storage.jobs import Job, JobPart

router = APIRouter()
CaptionFileFormat = Literal["srt", "vtt"]
STREAM_FORMAT_FOR_M4B = "aac"  # a chapter or a running book is streamed; MP4 is written only once whole


@router.post("/v1/audio/jobs", status_code=202)
async def create_job(
    request: Request,
    principal: Principal = Depends(require("speech")),
    lease: Lease = Depends(metered("speech")),
    jobs: JobService = Depends(get_jobs),
    _: object = Depends(get_speech),  # voices are resolved when the job is made: 503 until they are loaded
) -> dict[str, object]:
    body, uploads = await read_body(request, JobCreateRequest, jobs.options.max_upload_bytes)
    voice, caller = body.job_voice(), principal.caller
    given = [name for name, present in (("input", body.input), ("items", body.items), ("file", "file" in uploads))
             if present]  # fmt: skip
    if len(given) != 1:
        raise InvalidRequestError("send exactly one of input, items or a file", param="input")
    if body.input is not None:
        submit = partial(jobs.submit_text, body.input, voice, caller, markdown=body.input_format == "markdown",
                         title=body.title, chapter_pattern=body.chapter_pattern, charge=lease.charge)  # fmt: skip
    elif body.items is not None:
        submit = partial(jobs.submit_batch, [item.to_item() for item in body.items], voice, caller,
                         charge=lease.charge)  # fmt: skip
    else:
        submit = partial(jobs.submit_document, uploads["file"], voice, caller, title=body.title,
                         chapter_pattern=body.chapter_pattern, charge=lease.charge)  # fmt: skip
    job = await asyncio.to_thread(submit)
    jobs.wake()
    return job_object(jobs.get(job.id, caller), jobs.parts(job))


@router.get("/v1/audio/jobs")
def list_jobs(
    principal: Principal = Depends(require("speech")),
    jobs: JobService = Depends(get_jobs),
    status: JobStatus | None = None,
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
) -> dict[str, object]:
    """Newest first; `after` is the last id of the previous page."""
    listed = jobs.list(principal.caller, status=status, limit=limit + 1, after=after)
    page = listed[:limit]
    return {
        "object": "list",
        "data": [job_object(progress) for progress in page],
        "has_more": len(listed) > limit,
        "last_id": page[-1].job.id if page else None,
    }


@router.get("/v1/audio/jobs/{job_id}")
def get_job(
    job_id: str, principal: Principal = Depends(require("speech")), jobs: JobService = Depends(get_jobs)
) -> dict[str, object]:
    progress = jobs.get(job_id, principal.caller)
    return job_object(progress, jobs.parts(progress.job))


@router.get("/v1/audio/jobs/{job_id}/events")
async def job_events(
    job_id: str, request: Request, principal: Principal = Depends(require("speech")),
    jobs: JobService = Depends(get_jobs),
) -> Response:  # fmt: skip
    """Server-Sent Events: `job.progress` at once, after each finished segment and at least once a second, then one
    `job.completed`, `job.failed` or `job.cancelled` (or `job.deleted`, when it is deleted while watched)."""
    await asyncio.to_thread(jobs.get, job_id, principal.caller)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        try:
            async for progress in jobs.events(job_id, principal.caller):
                kind = f"job.{progress.job.status}" if progress.job.finished else "job.progress"
                yield _event({"type": kind, "job": job_object(progress)})
        except NotFoundError:
            yield _event({"type": "job.deleted", "job": {"id": job_id, "object": "audio.job"}})

    return await streaming_response(request, events(), "text/event-stream", lambda: {"Cache-Control": "no-store"})


@router.get("/v1/audio/jobs/{job_id}/audio", response_model=None)
async def job_audio(
    job_id: str, request: Request, principal: Principal = Depends(require("speech")),
    jobs: JobService = Depends(get_jobs), trace: RequestTrace = Depends(get_trace),
) -> Response:  # fmt: skip
    """A finished job's file (with `Range`); while it runs, the finished prefix streams and then the rest as it
    is made. A batch's items come from `/items/{id}/audio` or `/items.zip`."""
    job = (await asyncio.to_thread(jobs.get, job_id, principal.caller)).job
    if job.kind == "batch":
        raise InvalidRequestError("a batch job has one file per item: /items/{id}/audio or /items.zip")
    if job.status == "completed":
        return _file(jobs, job, None)
    return await _follow(request, jobs, job, None, str(job.request["response_format"]), trace)


@router.get("/v1/audio/jobs/{job_id}/chapters/{number}/audio", response_model=None)
async def chapter_audio(
    job_id: str, number: int, request: Request, principal: Principal = Depends(require("speech")),
    jobs: JobService = Depends(get_jobs), trace: RequestTrace = Depends(get_trace),
) -> Response:  # fmt: skip
    """One chapter (numbered from 1), streamed as its segments finish."""
    job = (await asyncio.to_thread(jobs.get, job_id, principal.caller)).job
    parts = await asyncio.to_thread(jobs.parts, job)
    if job.kind != "speech" or not 1 <= number <= len(parts):
        raise NotFoundError(f"job {job_id} has no chapter {number}", param="number", code="chapter_not_found")
    return await _follow(request, jobs, job, parts[number - 1], str(job.request["response_format"]), trace)


@router.get("/v1/audio/jobs/{job_id}/items/{item_id}/audio", response_model=None)
async def item_audio(
    job_id: str, item_id: str, request: Request, principal: Principal = Depends(require("speech")),
    jobs: JobService = Depends(get_jobs), trace: RequestTrace = Depends(get_trace),
) -> Response:  # fmt: skip
    job = (await asyncio.to_thread(jobs.get, job_id, principal.caller)).job
    parts = await asyncio.to_thread(jobs.parts, job)
    part = next((part for part in parts if job.kind == "batch" and part.name == item_id), None)
    if part is None:
        raise NotFoundError(f"job {job_id} has no item {item_id!r}", param="item_id", code="item_not_found")
    if job.status == "completed":
        return _file(jobs, job, part)
    return await _follow(request, jobs, job, part, str(part.request["response_format"]), trace)


@router.get("/v1/audio/jobs/{job_id}/captions", response_model=None)
async def job_captions(
    job_id: str, principal: Principal = Depends(require("speech")), jobs: JobService = Depends(get_jobs),
    caption_format: CaptionFileFormat = "vtt", item: str | None = None, chapter: int | None = None,
) -> Response:  # fmt: skip
    """A completed job's captions (SRT or WebVTT), timed in its file: a book's, with `chapter` (from 1) one chapter's
    timed from its start, or with `item` a batch item's."""
    job = (await asyncio.to_thread(jobs.get, job_id, principal.caller)).job
    part = None
    if chapter is not None:
        parts = await asyncio.to_thread(jobs.parts, job)
        if job.kind != "speech" or not 1 <= chapter <= len(parts):
            raise NotFoundError(f"job {job_id} has no chapter {chapter}", param="chapter", code="chapter_not_found")
    elif item is not None or job.kind == "batch":
        parts = await asyncio.to_thread(jobs.parts, job)
        part = next((part for part in parts if job.kind == "batch" and part.name == item), None)
        if part is None:
            raise NotFoundError(f"job {job_id} has no item {item!r}", param="item", code="item_not_found")
    if job.status != "completed":
        raise ConflictError(f"captions are written once the job completes; it is {job.status}",
                            code="job_not_completed")  # fmt: skip
    audio = jobs.result_path(job, part) if chapter is None else chapter_captions(jobs.store.job_dir(job.id), chapter)
    path = caption_paths(audio)[caption_format]
    if not path.is_file():
        raise NotFoundError(f"job {job_id} has no captions (its voice gives no timings)", code="captions_not_found")
    name = f"{job.id if part is None else part.name}{'' if chapter is None else f'-chapter-{chapter}'}.{caption_format}"
    return FileResponse(path, media_type=CAPTION_FORMATS[caption_format], filename=name)


@router.get("/v1/audio/jobs/{job_id}/items.zip", response_model=None)
async def items_zip(
    job_id: str, principal: Principal = Depends(require("speech")), jobs: JobService = Depends(get_jobs)
) -> Response:
    job = (await asyncio.to_thread(jobs.get, job_id, principal.caller)).job
    if job.kind != "batch":
        raise InvalidRequestError("only a batch job has items")
    if job.status != "completed":
        raise ConflictError(f"the ZIP is made once the job completes; it is {job.status}", code="job_not_completed")
    path = await asyncio.to_thread(jobs.items_zip, job)
    return FileResponse(path, media_type="application/zip", filename=f"{job.id}.zip")


@router.post("/v1/audio/jobs/{job_id}/cancel")
async def cancel_job(
    job_id: str, principal: Principal = Depends(require("speech")), jobs: JobService = Depends(get_jobs)
) -> dict[str, object]:
    return job_object(await jobs.cancel(job_id, principal.caller))


@router.delete("/v1/audio/jobs/{job_id}")
async def delete_job(
    job_id: str, principal: Principal = Depends(require("speech")), jobs: JobService = Depends(get_jobs)
) -> JSONResponse:
    await jobs.delete(job_id, principal.caller)
    return JSONResponse({"id": job_id, "object": "audio.job.deleted", "deleted": True})


def _event(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _file(jobs: JobService, job: Job, part: JobPart | None) -> FileResponse:
    path = jobs.result_path(job, part)
    if not path.is_file():  # deleted since it was looked up
        raise NotFoundError(f"no job {job.id}", param="job_id", code="job_not_found")
    fmt = path.suffix[1:]
    name = f"{job.id}.{fmt}" if part is None else f"{part.name}.{fmt}"
    return FileResponse(path, media_type=jobs.content_type(fmt), filename=name)


async def _follow(
    request: Request, jobs: JobService, job: Job, part: JobPart | None, response_format: str, trace: RequestTrace
) -> Response:  # fmt: skip
    if job.status in ("failed", "cancelled") and job.segments_done == 0:
        raise ConflictError(f"job {job.id} is {job.status} and made no audio", code="job_has_no_audio")
    fmt = STREAM_FORMAT_FOR_M4B if response_format == "m4b" else response_format
    rate = int(part.request["sample_rate"]) if part is not None else job.sample_rate  # type: ignore[call-overload]
    audio = AudioResponse(partial(jobs.follow, job, part), fmt, rate, trace, headers={"X-Voxserve-Job": job.id})
    return await audio_response(request, audio, stream=True)


def job_object(progress: Progress, parts: list[JobPart] | None = None) -> dict[str, object]:
    """A job as the API shows it; with `parts`, its chapters or items too."""
    job = progress.job
    shown: dict[str, object] = {
        "id": job.id,
        "object": "audio.job",
        "kind": job.kind,
        "status": job.status,
        "created_at": int(job.created_at),
        "started_at": None if job.started_at is None else int(job.started_at),
        "finished_at": None if job.finished_at is None else int(job.finished_at),
        **{
            key: job.request[key]
            for key in ("voice", "model", "response_format", "speed", "loudness", "title")
            if key in job.request
        },
        "progress": {
            "segments_done": job.segments_done,
            "segments_total": job.segments_total,
            "chars_done": job.chars_done,
            "chars_total": job.chars_total,
            "audio_seconds": round(job.audio_s, 3),
            "chars_per_second": progress.chars_per_s,
            "eta_seconds": progress.eta_s,
        },
        "error": None if job.error is None else {"message": job.error, "code": job.error_code},
    }
    if parts is not None and job.kind == "batch":
        shown["items"] = [{"id": part.name, **part.request} for part in parts]
    elif parts is not None:
        shown["chapters"] = [{"number": part.index + 1, "title": part.name} for part in parts]
    return shown
