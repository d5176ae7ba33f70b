from __future__ import annotations

from pathlib import Path

import pytest

from voxserve.errors import ConfigError
from voxserve.settings import OPENAI_VOICE_NAMES, available_cores, load_settings


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "voxserve.toml"
    config.write_text('port = 9001\nmax_input_chars = 100\ndefault_voice = "from-file"\n')
    monkeypatch.setenv("VOXSERVE_MAX_INPUT_CHARS", "200")
    monkeypatch.setenv("VOXSERVE_PORT", "9002")
    settings = load_settings(config, port=9003, host=None)
    assert (settings.port, settings.max_input_chars, settings.default_voice) == (9003, 200, "from-file")
    assert settings.host == "127.0.0.1"


def test_openai_voice_names_alias_the_default_voice_unless_configured() -> None:
    aliases = load_settings(voice_aliases={"nova": "espeak:en-us"}).resolved_aliases()
    assert set(OPENAI_VOICE_NAMES) <= set(aliases)
    assert aliases["alloy"] == "en_US-joe-medium"
    assert aliases["nova"] == "espeak:en-us"


def test_workers_times_threads_may_not_exceed_cores() -> None:
    with pytest.raises(ConfigError, match="exceeds"):
        load_settings(workers=available_cores(), intra_op_threads=2)


def test_automatic_sizing_fits_the_cores() -> None:
    settings = load_settings()
    assert settings.worker_count * settings.threads_per_worker <= available_cores()


def test_unknown_keys_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError):
        load_settings(config)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
