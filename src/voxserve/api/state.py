"""What the routes depend on: the speech service once it is loaded and warm."""

from __future__ import annotations

from fastapi import Request

from voxserve.errors import NotReadyError
from voxserve.service.speech import SpeechService


class AppState:
    """Holds the service; `ready` turns true after every engine has run once."""

    def __init__(self) -> None:
        self.speech: SpeechService | None = None
        self.ready = False


def get_state(request: Request) -> AppState:
    return request.app.state.voxserve


def get_speech(request: Request) -> SpeechService:
    state = get_state(request)
    if state.speech is None or not state.ready:
        raise NotReadyError("voices are still loading; retry shortly")
    return state.speech
