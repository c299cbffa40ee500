"""Tracebacks in the logs are outlines: exception classes and frames, never an exception's message,
which may quote what somebody typed (``invalid literal for int() with base 10: '፩'``)."""

from __future__ import annotations

import io
import logging

import pytest

from bot.logs import exception_outline, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _typed_digit(text: str) -> int:
    return int(text)


def test_a_logged_exception_shows_its_class_and_frames_but_not_its_message() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", stream)
    try:
        try:
            _typed_digit("፩ red door at 99 Secret Lane")
        except ValueError as exc:
            raise RuntimeError(f"wrapped: {exc}") from exc
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logged = stream.getvalue()
    assert "Exception in ASGI application" in logged
    assert "builtins.ValueError" in logged and "builtins.RuntimeError" in logged and "_typed_digit" in logged
    assert "፩" not in logged and "Secret Lane" not in logged and "invalid literal" not in logged


def test_an_outline_follows_the_cause_chain_without_looping() -> None:
    first = KeyError("answers")
    second = TypeError("object of type 'NoneType' has no len()")
    second.__context__ = first
    first.__context__ = second  # a cycle, as asyncio can make
    outline = exception_outline(second)
    assert "builtins.KeyError" in outline and "builtins.TypeError" in outline and "answers" not in outline
