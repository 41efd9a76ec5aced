import os

import pytest

from llm_server import FakeLLMServer


@pytest.fixture(autouse=True, scope="session")
def _own_config_dir(tmp_path_factory):
    """The reference cache's signing key lives in the user's config directory (checksums.key_path):
    tests, and the `pike` processes they start, use their own."""
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))
    yield
    if old is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = old


@pytest.fixture
def llm_server(monkeypatch):
    """A real chat-completions server on 127.0.0.1 (see tests/llm_server.py)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a CI proxy must not intercept it
    with FakeLLMServer() as server:
        yield server
