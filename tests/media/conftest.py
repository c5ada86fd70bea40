from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media.harness import RunningRtpEngine, rtpengine


@pytest.fixture
def real_rtpengine(tmp_path: Path) -> Iterator[RunningRtpEngine]:
    with rtpengine(tmp_path / "rtpengine") as running:
        yield running
