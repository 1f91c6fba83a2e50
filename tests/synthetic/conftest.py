"""Fixtures of the synthetic-stage tests: the tiny random Llama, a tiny classifier bundle, a test HTTP server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from openai_stub import ChatServer


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A private model cache for the session (exported, so worker and CLI subprocesses build into it too)."""
    folder = tmp_path_factory.mktemp("model-cache")
    old = os.environ.get("PROSOCIAL_MODEL_CACHE")
    os.environ["PROSOCIAL_MODEL_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("PROSOCIAL_MODEL_CACHE", None)
    else:
        os.environ["PROSOCIAL_MODEL_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model(model_cache) -> Path:
    from synthetic.tiny_model import ensure_tiny_llama

    return ensure_tiny_llama(model_cache)


@pytest.fixture
def chat_server():
    servers: list[ChatServer] = []

    def start(respond):
        server = ChatServer(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
