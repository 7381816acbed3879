"""The guest agent: a stdlib-only program that serves Platform primitives inside a guest.

The host uploads the modules listed in :data:`AGENT_MODULES` into a fresh
directory in the guest and runs ``python3 -m guest_agent.agent`` there; see
``agent.py`` for what it does and ``protocol.py`` for how it talks.
"""

from __future__ import annotations

from pathlib import Path

#: Everything the agent needs in the guest (no third-party imports in any of them).
AGENT_MODULES = ("__init__.py", "protocol.py", "devices.py", "dma.py", "function.py", "agent.py")
PACKAGE_DIR = Path(__file__).resolve().parent


def agent_files() -> list[tuple[str, bytes]]:
    """(file name, contents) of the modules to upload."""
    return [(name, (PACKAGE_DIR / name).read_bytes()) for name in AGENT_MODULES]
