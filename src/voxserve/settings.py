"""The one `Settings` object: defaults < config file (TOML) < environment (`VOXSERVE_*`) < CLI flags.

It is built once, at start-up, and passed down; no other module reads the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from voxserve.errors import ConfigError

OPENAI_VOICE_NAMES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
OPENAI_MODEL_NAMES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# On a GPU one call serves many segments: two workers keep it fed (one prepares while the other runs), and
# batches grow to this many segments when requests queue up.
GPU_WORKERS = 2
GPU_MAX_BATCH_SIZE = 64


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXSERVE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = "info"

    default_voice: str = "en_US-joe-medium"
    voices_dir: Path | None = None
    voice_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Voice names mapped onto voice ids; OpenAI's names map onto default_voice unless set here.",
    )
    espeak_voices: bool = True

    backend: Literal["onnxruntime", "torch"] = Field("onnxruntime", description="Runtime for Piper voices.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="torch device; auto = CUDA if any.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="torch decoder precision; auto = float16 on a GPU, float32 on CPU."
    )
    gpu_memory_fraction: float = Field(0.8, gt=0, le=1, description="Share of free GPU memory batches may use.")

    max_input_chars: int = Field(4096, ge=1)
    workers: int = Field(0, ge=0, description="Engine worker threads; 0 = one per core (2 on a GPU).")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per worker; 0 = cores // workers.")
    solo_intra_op_threads: int = Field(0, ge=0, description="threads for a segment that runs alone; 0 = all cores.")
    warmup: bool = True
    malloc_arena_max: int = Field(2, ge=0, description="glibc malloc arenas for the server process; 0 = default.")

    max_queue_size: int = Field(256, ge=0, description="Queued segments before new requests get 429; 0 = no limit.")
    request_timeout_s: float = Field(120.0, gt=0)
    shutdown_timeout_s: float = Field(
        20.0, gt=0, description="On SIGTERM, how long open responses (streams, job followers) may go on before closing."
    )
    max_batch_size: int = Field(0, ge=0, description="Segments per engine call; 0 = 64 on a GPU, else 1.")
    max_queue_delay_ms: float = Field(2.0, ge=0)
    express_worker: bool = Field(
        True, description="On CPU, one more worker that takes only first segments (first audio never waits)."
    )
    worker_niceness: int = Field(
        10, ge=0, le=19, description="On CPU, how far below the express worker the other workers' priority is."
    )
    job_priority: Literal["idle", "low", "worker"] = Field(
        "idle",
        description="On CPU, where long-form jobs run: idle (SCHED_IDLE), low (nice 19), or worker (worker_niceness).",
    )

    release_memory_idle_s: float = Field(
        10.0, ge=0, description="After this long without synthesis, engines give back pooled memory; 0 = never."
    )

    phoneme_cache_size: int = Field(10_000, ge=0)
    audio_cache_bytes: int = Field(64 * 2**20, ge=0)
    audio_cache_dir: Path | None = None
    audio_cache_disk_bytes: int = Field(2**30, ge=0)
    audio_cache_captions: bool = Field(
        True, description="Cached results keep their word timings, so their captions can be fetched later."
    )

    noise_scale: float | None = Field(None, ge=0.0, description="Override every Piper voice's noise scale.")
    noise_w: float | None = Field(None, ge=0.0, description="Override every Piper voice's duration noise.")

    loudness_normalization: bool = Field(
        True, description="Every voice brought to loudness_target_lufs by one gain per voice, measured once."
    )
    loudness_target_lufs: float = Field(
        -18.0, ge=-40.0, le=-6.0, description="Integrated loudness (ITU-R BS.1770) every voice is brought to."
    )
    peak_ceiling_dbfs: float = Field(
        -1.0, ge=-20.0, le=0.0, description="No output sample exceeds this level (a peak limiter on every output)."
    )

    telemetry: bool = Field(True, description="Per-request tracing and request metrics; off to measure their cost.")
    summary_log_every: int = Field(100, ge=0, description="Log one summary line every N speech requests; 0 = never.")
    diagnostics_window_s: float = Field(300.0, gt=0, description="How far back diagnostics and summaries look.")
    metrics_endpoint: bool = True
    diagnostics_endpoints: bool = True
    ui_enabled: bool = Field(True, description="Serve the web playground and dashboard at `/`.")

    # `voxserve cluster serve` (Ray Serve, the `ray` extra).
    cluster_address: str | None = Field(None, description="Ray cluster to join; None starts one on this machine.")
    cluster_replicas: int = Field(2, ge=1, description="Model replicas (the fewest, when autoscaling).")
    cluster_max_replicas: int = Field(0, ge=0, description="Autoscale up to this many replicas; 0 = fixed count.")
    cluster_target_ongoing_requests: float = Field(
        2.0, gt=0, description="Autoscaling aims at this many model calls in flight per replica."
    )
    cluster_replica_cpus: float = Field(1.0, gt=0, description="CPUs each model replica reserves (Ray num_cpus).")
    cluster_replica_gpus: float = Field(0.0, ge=0, description="GPUs each model replica reserves (Ray num_gpus).")
    cluster_replica_workers: int = Field(
        0, ge=0, description="Model calls one replica runs at once; 0 = one per reserved CPU."
    )
    cluster_ingress_cpus: float = Field(1.0, ge=0, description="CPUs the ingress (the HTTP API) reserves.")
    cluster_max_replicas_per_node: int = Field(
        0, ge=0, description="At most this many model replicas on one node (spread for failures); 0 = no limit."
    )
    cluster_graceful_shutdown_s: float = Field(
        20.0, ge=0, description="A model replica being stopped finishes its calls for up to this long."
    )
    cluster_autoscaling_config: dict[str, float] = Field(
        default_factory=dict,
        description="More of Ray Serve's autoscaling_config (upscale_delay_s, downscale_delay_s, look_back_period_s).",
    )
    profile_dir: Path | None = Field(None, description="Where profiler captures are written; None = a temp dir.")
    profile_keep: int = Field(5, ge=1, description="Profiler captures kept on disk; older ones are deleted.")

    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Bootstrap keys with every scope (for containers); never logged."
    )
    insecure_no_auth: bool = Field(False, description="Serve a non-loopback bind without API keys, on purpose.")
    metrics_auth: Literal["remote", "always", "never"] = Field(
        "remote",
        description="When /metrics needs an admin key (once keys exist): from non-loopback clients, always, never.",
    )
    key_requests_per_minute: int = Field(0, ge=0, description="Default per-key request rate; 0 = no limit.")
    key_max_streams: int = Field(0, ge=0, description="Default per-key concurrent requests; 0 = no limit.")
    key_chars_per_day: int = Field(0, ge=0, description="Default per-key input characters per day; 0 = no limit.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header values served; empty = loopback names plus `host`; '*' = any."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Browser origins allowed to call the API.")
    max_json_body_bytes: int = Field(2**20, ge=1024, description="Largest JSON request body.")

    data_dir: Path = Field(
        Path.home() / ".local" / "share" / "voxserve", description="Custom voices (SQLite + files) live here."
    )
    voice_cache_size: int = Field(64, ge=0, description="Voice features kept in memory (LRU), custom and built-in.")
    voice_preload: list[str] = Field(default_factory=list, description="Custom voices loaded into the cache at start.")
    custom_voice_base: str | None = Field(None, description="Base voice for custom voices; None = closest by pitch.")
    reference_min_s: float = Field(5.0, gt=0)
    reference_max_s: float = Field(60.0, gt=0)
    max_upload_bytes: int = Field(50 * 2**20, ge=1, description="Largest upload or fetched file.")
    max_source_s: float = Field(600.0, gt=0, description="Longest audio accepted for conversion.")
    fetch_timeout_s: float = Field(20.0, gt=0, description="Time limit for fetching one URL.")
    allow_private_urls: bool = Field(False, description="Fetch URLs on loopback/private/link-local hosts.")
    conversion_threads: int = Field(1, ge=1, description="Threads for conversions and voice analysis (not speech's).")
    max_concurrent_conversions: int = Field(
        2, ge=1, description="Conversions and voice registrations in progress at once; more get 429."
    )
    conversion_niceness: int = Field(
        10, ge=0, le=19, description="How far below speech the conversion threads' CPU priority is (Linux); 0 = same."
    )
    conversion_window_s: float = Field(4.0, ge=0.5, description="Audio converted per step when streaming.")
    conversion_overlap_s: float = Field(0.2, ge=0.01, le=1.0)
    conversion_envelope_strength: float = Field(1.0, ge=0.0, le=1.0, description="How far timbre moves (0-1).")

    max_job_chars: int = Field(2_000_000, ge=1, description="Longest text a long-form job takes.")
    max_batch_items: int = Field(10_000, ge=1, description="Most items one batch job takes.")
    max_running_jobs: int = Field(1, ge=1, description="Jobs that make progress at once; others wait queued.")
    job_retention_hours: float = Field(168.0, gt=0, description="Finished jobs (and their files) are deleted after.")
    jobs_disk_bytes: int = Field(20 * 2**30, ge=0, description="Disk all jobs' files may take; new jobs past it: 507.")
    job_paragraph_pause_ms: int = Field(600, ge=0, le=10_000, description="Silence after each paragraph of a job.")
    job_chapter_pause_ms: int = Field(2000, ge=0, le=30_000, description="Silence after each chapter of a job.")

    fault_injection: str = Field(
        "", description="Test only: share of engine calls that fail, e.g. 'raise=0.05,hang=0.01,garbage=0.02'."
    )
    fault_hang_s: float = Field(30.0, gt=0, description="How long an injected hang lasts.")

    first_segment_max_chars: int = Field(24, ge=8)
    max_segment_chars: int = Field(150, ge=16)
    segment_growth: bool = Field(
        True,
        description="Each segment after the first at most about twice the text before it (24, 48, 144, 150 chars), "
        "so later segments are ready before the audio before them runs out under load; false: max_segment_chars.",
    )
    crossfade_ms: float = Field(8.0, ge=0.0, le=100.0)
    decode_windows: bool = Field(
        True,
        description="A response's first segment is decoded in windows (Piper voices): its first audio comes after "
        "the text stage and one short window, and the rest follows window by window, scheduled by playback time.",
    )
    decode_window_first_frames: int = Field(
        16, ge=1, le=1024, description="Frames of latent in a segment's first window (a frame is 256 samples)."
    )
    decode_window_longest_frames: int = Field(
        512, ge=1, le=100_000, description="Windows after the first grow eightfold up to this many frames."
    )

    stream_strip_markup: bool = Field(
        True, description="Streamed text (WebSocket, Wyoming): Markdown markup, code blocks and emoji are not spoken."
    )
    stream_lookahead_segments: int = Field(
        4, ge=1, le=64, description="Streamed text: segments queued ahead of the one being played."
    )
    stream_max_response_chars: int = Field(200_000, ge=1, description="Streamed text: characters one response takes.")
    stream_idle_timeout_s: float = Field(300.0, gt=0, description="A WebSocket or Wyoming client silent this long.")
    wyoming_uri: str | None = Field(
        None,
        pattern=r"^(tcp://[^/\s]+:\d+|unix://\S+)$",
        description="Serve Home Assistant's Wyoming protocol here too, e.g. tcp://127.0.0.1:10200.",
    )
    wyoming_zeroconf: bool = Field(False, description="Announce the Wyoming server on the network (_wyoming._tcp).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @model_validator(mode="after")
    def _fit_workers_to_cores(self) -> Self:
        cores = available_cores()
        if self.workers and self.intra_op_threads and self.workers * self.intra_op_threads > cores:
            raise ValueError(
                f"workers x intra_op_threads = {self.workers * self.intra_op_threads} exceeds {cores} available cores"
            )
        return self

    @property
    def worker_count(self) -> int:
        """Workers on CPU; see `scheduler_shape` for the GPU."""
        return self.workers or available_cores()

    def scheduler_shape(self, *, on_gpu: bool) -> tuple[int, int]:
        """Workers and the largest batch, resolving 0 ("auto") for where the engines run."""
        if on_gpu:
            return self.workers or GPU_WORKERS, self.max_batch_size or GPU_MAX_BATCH_SIZE
        return self.worker_count, self.max_batch_size or 1

    @property
    def threads_per_worker(self) -> int:
        return self.intra_op_threads or max(1, available_cores() // self.worker_count)

    @property
    def solo_threads(self) -> int:
        return max(self.solo_intra_op_threads or available_cores(), self.threads_per_worker)

    def resolved_aliases(self) -> dict[str, str]:
        """OpenAI voice names onto the default voice, overlaid by the configured aliases."""
        return {name: self.default_voice for name in OPENAI_VOICE_NAMES} | self.voice_aliases


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings from a TOML file (optional), the environment and flags (`None` flags are ignored)."""
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        if config_file is None:
            return Settings(**given)
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")
        file_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})
        return type("Settings", (Settings,), {"model_config": file_config})(**given)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
