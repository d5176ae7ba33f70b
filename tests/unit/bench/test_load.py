from __future__ import annotations

import pytest

from voxserve.bench.load import Target, check_loopback
from voxserve.errors import ConfigError


def test_openai_body_and_template_body() -> None:
    openai = Target("http://127.0.0.1:8000/v1/audio/speech", voice="nova", response_format="wav", stream=False)
    assert openai.body('Say "hi"') == {
        "model": "tts-1", "input": 'Say "hi"', "voice": "nova", "response_format": "wav", "stream": False
    }  # fmt: skip
    piper = Target("http://127.0.0.1:5000/", template='{"text": "{text}", "length_scale": 1.0}')
    assert piper.body('Say "hi"\nnow') == {"text": 'Say "hi"\nnow', "length_scale": 1.0}


def test_only_loopback_targets_unless_allowed() -> None:
    check_loopback("http://127.0.0.1:8000/v1/audio/speech", allow_remote=False)
    check_loopback("http://localhost:8000/", allow_remote=False)
    with pytest.raises(ConfigError, match="allow-remote"):
        check_loopback("http://10.0.0.1:8000/", allow_remote=False)
    check_loopback("http://10.0.0.1:8000/", allow_remote=True)
