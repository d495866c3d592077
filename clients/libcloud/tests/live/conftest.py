"""One real cloud for the whole live suite (``stratus-testcloud``), and a ``HOME`` whose
``~/.stratuslab/stratuslab-user.cfg`` names it, as ``stratus-copy-config`` plus an edit would."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testcloud import LiveCloud  # noqa: E402


@pytest.fixture(scope="session")
def cloud():
    started = LiveCloud()
    yield started
    started.close()


@pytest.fixture
def configured(cloud, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("STRATUSLAB_CONFIG", "STRATUSLAB_ENDPOINT", "STRATUSLAB_USERNAME",
                     "STRATUSLAB_PASSWORD", "STRATUSLAB_USER_CONFIG_SECTION"):
        monkeypatch.delenv(variable, raising=False)
    cloud.write_config(tmp_path)
    return cloud
