"""PTY terminal sessions over WebSockets.

`TerminalManager` (stored at `app[appkeys.TERMINALS]`) is what other subsystems use:
`await manager.close_workspace(ws_id)` when a workspace stops, `manager.session_count()` for
/system-info. The routes live in `ws.py`; the wire format in `protocol.py`.
"""

from vm_agent.terminal.manager import TerminalManager
from vm_agent.terminal.session import TerminalSession

__all__ = ["TerminalManager", "TerminalSession"]
