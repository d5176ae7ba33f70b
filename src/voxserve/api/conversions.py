"""`POST /v1/audio/conversions`: a recording, converted toward a voice, streamed (default) or buffered."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from voxserve.api.access import metered, require
from voxserve.api.forms import read_body
from voxserve.api.protocol import ConversionRequest
from voxserve.api.state import get_conversion, get_trace
from voxserve.api.streaming import audio_response, unless_disconnected
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.conversion import ConversionService
from voxserve.service.limits import Lease

router = APIRouter()


@router.post("/v1/audio/conversions", response_model=None)
async def create_conversion(
    request: Request,
    principal: Principal = Depends(require("speech")),
    _: Lease = Depends(metered("speech")),
    conversion: ConversionService = Depends(get_conversion),
    trace: RequestTrace = Depends(get_trace),
) -> Response:
    body, uploads = await read_body(request, ConversionRequest, conversion.max_upload_bytes)
    trace.add("receive", trace.elapsed_s(), start_s=trace.started_at)
    audio = await unless_disconnected(request, conversion.open(body.to_job(uploads, principal.caller), trace))
    return await audio_response(request, audio, stream=body.stream)
