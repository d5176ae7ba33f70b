"""`POST /v1/audio/captions`: the captions (SRT, WebVTT or JSON) of what a speech request says, timed by the
model's own durations; with `include_audio`, the audio too. `GET /v1/audio/captions/{result}`: those of a cached
speech result."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from voxserve.api.access import metered, require
from voxserve.api.protocol import CaptionFormat, CaptionRequest
from voxserve.api.state import get_speech, get_trace
from voxserve.api.streaming import unless_disconnected
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.captions import CAPTION_FORMATS, CAPTION_MAX_CHARS, caption_cues, render
from voxserve.service.limits import Lease
from voxserve.service.speech import SpeechService
from voxserve.service.timestamps import Timestamps

router = APIRouter()


@router.post("/v1/audio/captions", response_model=None)
async def create_captions(
    body: CaptionRequest,
    request: Request,
    principal: Principal = Depends(require("speech")),
    lease: Lease = Depends(metered("speech")),
    speech: SpeechService = Depends(get_speech),
    trace: RequestTrace = Depends(get_trace),
) -> Response:
    trace.add("receive", trace.elapsed_s(), start_s=trace.started_at)
    lease.charge(len(body.input))
    job = replace(body.to_job(principal.caller, use_cache=False), timestamps="word")
    audio = speech.open(job, trace)
    data = await unless_disconnected(request, audio.body())
    words = Timestamps.join(audio.timestamps or []).words
    cues = caption_cues(body.input, words, audio.trace.audio_s, body.caption_max_chars)
    if not body.include_audio:
        return Response(render(cues, body.caption_format), media_type=CAPTION_FORMATS[body.caption_format],
                        headers=audio.headers())  # fmt: skip
    payload: dict[str, object] = {
        "caption_format": body.caption_format,
        "captions": [{"start": c.start, "end": c.end, "text": c.text} for c in cues]
        if body.caption_format == "json" else render(cues, body.caption_format),
        "format": body.response_format,
        "audio": base64.b64encode(data).decode(),
    }  # fmt: skip
    return JSONResponse(payload, headers=audio.headers())


@router.get("/v1/audio/captions/{result}", response_model=None)
async def cached_captions(
    result: str,
    principal: Principal = Depends(require("speech")),
    speech: SpeechService = Depends(get_speech),
    caption_format: CaptionFormat = "vtt",
    caption_max_chars: int = Query(CAPTION_MAX_CHARS, ge=10, le=200),
) -> Response:
    """The captions of a speech response the audio cache holds; `result` is its `X-Voxserve-Result` header."""
    captions = await asyncio.to_thread(speech.cached_captions, result, caption_format, caption_max_chars)
    return Response(captions, media_type=CAPTION_FORMATS[caption_format])
