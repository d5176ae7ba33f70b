"""`POST /v1/audio/conversions`: a recording, converted toward a voice, streamed (default) or buffered."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from voxserve.api.access import metered, require
from voxserve.api.forms import read_body
from voxserve.api.protocol import ConversionRequest
from voxserve.api.state import get_conversion, get_trace
from voxserve.api.streaming import streaming_response, unless_disconnected
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.conversion import ConversionService, ConversionStream
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
    stream = await unless_disconnected(request, conversion.open(body.to_job(uploads, principal.caller), trace))
    if not body.stream:
        content = await unless_disconnected(request, stream.body())
        return Response(content, media_type=stream.content_type, headers=_headers(stream))
    return await streaming_response(request, stream.encoded(), stream.content_type, lambda: _headers(stream))


def _headers(stream: ConversionStream) -> dict[str, str]:
    return {
        "Server-Timing": stream.trace.server_timing(),
        "X-Request-Id": stream.trace.request_id,
        "X-Voxserve-Sample-Rate": str(stream.sample_rate),
    }
