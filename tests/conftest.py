from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess


@pytest.fixture(scope="module")
def dev_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One real ``ctk agent -dev`` per test module."""
    log = Path(tmp_path_factory.mktemp("agent")) / "agent.log"
    with AgentProcess("-dev", "-node", "n1", log_path=log) as agent:
        yield agent
