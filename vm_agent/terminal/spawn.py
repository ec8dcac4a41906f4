"""Start a program as the session leader of a new PTY with libc's posix_spawn.

Why not fork (ptyprocess, or a preexec_fn): forking a daemon of ~70 MB copies its page tables
and then pays copy-on-write faults, and the child runs Python code before exec; that cost ~9 ms
of the daemon's time per terminal (measured), which made opening hundreds of terminals slow.
posix_spawn uses vfork semantics (the child shares memory until exec), ~3x cheaper.

Why through ctypes rather than `os.posix_spawn`: a terminal needs the child to change into the
workspace directory and to acquire the PTY as its controlling terminal. The latter works with
what os.posix_spawn offers (setsid, then open the PTY by path, which a session leader without a
terminal acquires), but it has no chdir action; glibc (≥ 2.29) and musl provide
`posix_spawn_file_actions_addchdir_np`, and glibc ≥ 2.34 `addclosefrom_np`, used when present
so no descriptor another library opened without close-on-exec leaks into the shell.

Only posix_spawn itself releases the GIL, since it waits for the child's exec: the caller may run
this in a worker thread. The dozen bookkeeping calls before it keep the GIL, because releasing
and retaking it around each, while the event loop's thread wants it too, costs more than the
calls themselves: keeping it cut the daemon's CPU per terminal opened by 5-14% (measured).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Mapping, Sequence

_libc = ctypes.PyDLL(None, use_errno=True)  # calls keep the GIL
_blocking_libc = ctypes.CDLL(None, use_errno=True)  # calls release it

# glibc's flag values (stable ABI since their introduction).
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80

# Opaque libc structures, allocated with room to spare (glibc x86-64/aarch64: 80, 336, 128 bytes).
_FILE_ACTIONS_SIZE = 512
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256

# Every signal back to its default, written as the bits of a sigset_t (little-endian words) since
# libc's sigfillset/sigaddset leave out its own two internal real-time signals, which posix_spawn
# would then leave ignored in the shell and everything it starts.
_ALL_SIGNALS = (((1 << 64) - 1) & ~(1 << (signal.SIGKILL - 1)) & ~(1 << (signal.SIGSTOP - 1))).to_bytes(8, "little")

_pid_t = ctypes.c_int

_spawn = _blocking_libc.posix_spawn
_spawn.argtypes = [ctypes.POINTER(_pid_t), ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p)]
_spawn.restype = ctypes.c_int

_addchdir = getattr(_libc, "posix_spawn_file_actions_addchdir_np", None)
_addclosefrom = getattr(_libc, "posix_spawn_file_actions_addclosefrom_np", None)

AVAILABLE = _addchdir is not None


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(result, f"{what}: {os.strerror(result)}")


def _cstrings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def spawn_on_terminal(
    path: str, argv: Sequence[str], env: Mapping[str, str], cwd: str | None, terminal: str
) -> int:
    """Run `path` with `argv` and exactly `env` in a new session whose controlling terminal and
    standard streams are the PTY slave named `terminal`; returns the pid.

    Signal dispositions are reset to their defaults and the signal mask cleared (this process
    ignores SIGPIPE, which a shell would otherwise inherit). Raises OSError with the errno of
    whatever failed: a missing directory, a program that cannot be executed.
    """
    if _addchdir is None:  # pragma: no cover - every supported libc has it
        raise OSError(0, "this C library cannot start terminals (posix_spawn_file_actions_addchdir_np missing)")
    actions = ctypes.create_string_buffer(_FILE_ACTIONS_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    _check(_libc.posix_spawn_file_actions_init(actions), "file actions")
    _check(_libc.posix_spawnattr_init(attr), "spawn attributes")
    try:
        encoded = os.fsencode(terminal)
        _check(_libc.posix_spawn_file_actions_addopen(actions, 0, encoded, os.O_RDWR, 0), "open terminal")
        _check(_libc.posix_spawn_file_actions_adddup2(actions, 0, 1), "stdout")
        _check(_libc.posix_spawn_file_actions_adddup2(actions, 0, 2), "stderr")
        if _addclosefrom is not None:
            _check(_addclosefrom(actions, 3), "close descriptors")
        if cwd is not None:
            _check(_addchdir(actions, os.fsencode(cwd)), "working directory")
        defaults = ctypes.create_string_buffer(_ALL_SIGNALS, _SIGSET_SIZE)
        empty = ctypes.create_string_buffer(_SIGSET_SIZE)
        _libc.sigemptyset(empty)
        _check(_libc.posix_spawnattr_setsigdefault(attr, defaults), "signal defaults")
        _check(_libc.posix_spawnattr_setsigmask(attr, empty), "signal mask")
        _check(_libc.posix_spawnattr_setflags(attr, ctypes.c_short(_SETSID | _SETSIGDEF | _SETSIGMASK)), "flags")
        args = _cstrings([os.fsencode(arg) for arg in argv])
        envp = _cstrings([os.fsencode(key) + b"=" + os.fsencode(value) for key, value in env.items()])
        pid = _pid_t()
        result = _spawn(ctypes.byref(pid), os.fsencode(path), actions, attr, args, envp)
        if result != 0:
            raise OSError(result, os.strerror(result))
        return pid.value
    finally:
        _libc.posix_spawn_file_actions_destroy(actions)
        _libc.posix_spawnattr_destroy(attr)
