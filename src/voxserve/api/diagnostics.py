"""`/diagnostics/*`: performance snapshot, bottleneck diagnosis, a live series for dashboards, in-process
benchmark, profiler captures."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from voxserve.api.access import require
from voxserve.api.protocol import ResponseFormat
from voxserve.api.state import get_diagnostics, get_profiler
from voxserve.service.diagnostics import MAX_BENCHMARK_CONCURRENCY, MAX_BENCHMARK_S, Diagnostics
from voxserve.service.profiling import MAX_CAPTURE_REQUESTS, MAX_CAPTURE_S, Profiler

router = APIRouter(prefix="/diagnostics", dependencies=[Depends(require("admin"))])


class BenchmarkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(10.0, gt=0, le=MAX_BENCHMARK_S)
    concurrency: int = Field(1, ge=1, le=MAX_BENCHMARK_CONCURRENCY)
    voice: str | None = None
    response_format: ResponseFormat = "wav"


class ProfilerStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: int | None = Field(None, ge=1, le=MAX_CAPTURE_REQUESTS)
    seconds: float | None = Field(None, gt=0, le=MAX_CAPTURE_S)


@router.get("/performance")
async def performance(diagnostics: Diagnostics = Depends(get_diagnostics)) -> dict[str, object]:
    return await asyncio.to_thread(diagnostics.performance)


@router.get("/bottleneck")
async def bottleneck(diagnostics: Diagnostics = Depends(get_diagnostics)) -> dict[str, object]:
    return await asyncio.to_thread(diagnostics.bottleneck)


@router.get("/live")
async def live(
    bucket_s: float = Query(5.0, ge=1.0, le=60.0), diagnostics: Diagnostics = Depends(get_diagnostics)
) -> dict[str, object]:
    return await asyncio.to_thread(diagnostics.live, bucket_s)


@router.post("/benchmark")
async def benchmark(
    body: BenchmarkRequest | None = Body(None), diagnostics: Diagnostics = Depends(get_diagnostics)
) -> dict[str, object]:
    body = body or BenchmarkRequest()
    return await diagnostics.benchmark(body.seconds, body.concurrency, body.voice, body.response_format)


@router.post("/profiler/start")
async def start_profiler(
    body: ProfilerStart | None = Body(None),
    requests: int | None = Query(None, ge=1, le=MAX_CAPTURE_REQUESTS),
    seconds: float | None = Query(None, gt=0, le=MAX_CAPTURE_S),
    profiler: Profiler = Depends(get_profiler),
) -> dict[str, object]:
    """`requests=N` and/or `seconds=S`, as query parameters or a JSON body."""
    body = body or ProfilerStart()
    return await asyncio.to_thread(profiler.start, body.requests or requests, body.seconds or seconds)


@router.get("/profiler/status")
async def profiler_status(profiler: Profiler = Depends(get_profiler)) -> dict[str, object]:
    return profiler.status()


@router.get("/profiler/result", response_model=None)
async def profiler_result(profiler: Profiler = Depends(get_profiler)) -> FileResponse:
    """The merged Chrome trace (open it in Perfetto or chrome://tracing); its summary is under
    `otherData.voxserve`."""
    return FileResponse(profiler.result(), media_type="application/json", filename="voxserve-profile.json")
