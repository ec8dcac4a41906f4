"""Placement of terminals and agents inside a workspace container: `docker exec`.

The wrapped command is the docker CLI, so the PTY (terminals) or the pipes (agents) connect
straight to the process in the container and the spawner treats it like any local program.
Secret environment never goes on the command line (`-e` would show it in `ps` on the VM): it is
written to a 0600 file on tmpfs (RAM, never disk) that `docker exec --env-file` reads; the file
is listed in `Command.cleanup_paths` for the spawner to delete once the process has ended.

Ending the docker CLI does not end the program in the container: dockerd keeps an exec's
process (and its TTY) alive after the client is gone, so every closed terminal would leave a
shell behind. So the program records its PID in the container, and a small host-side shell
wrapper keeps a detached reaper waiting for it: when the wrapper ends, by itself or killed,
the reaper runs one `docker exec` that hangs up that process, its session (a TTY exec is a
session leader) and its descendants.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vm_agent.workspaces.placement import Command, resolve_workdir

# docker exec -it would otherwise swallow Ctrl-P (its default detach sequence is Ctrl-P Ctrl-Q),
# which shells use for history. Ctrl-] twice is what nobody types on purpose.
DETACH_KEYS = "ctrl-],ctrl-]"
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# In the container, before the program: note our PID ($0 is the pid file), then become it.
_RECORD_PID = '{ echo $$ > "$0"; } 2>/dev/null; exec "$@"'

# In the container, at the end: $1 is the pid file. Collect the process, every process of its
# session when it leads one (terminals), and all descendants; HUP, TERM, then KILL them.
# Reads /proc directly so it needs nothing but a POSIX shell (busybox, dash, bash).
_REAP = """f=$1; top=$(cat "$f" 2>/dev/null); rm -f "$f"
[ -n "$top" ] && [ -r "/proc/$top/stat" ] || exit 0
read -r line < "/proc/$top/stat"; set -- ${line##*) }; sid=$4
victims=" $top "; changed=1
while [ "$changed" = 1 ]; do
    changed=0
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        case "$victims" in *" $p "*) continue ;; esac
        read -r line < "$d/stat" 2>/dev/null || continue
        set -- ${line##*) }
        case "$victims" in *" $2 "*) victims="$victims$p "; changed=1; continue ;; esac
        if [ "$sid" = "$top" ] && [ "$4" = "$top" ]; then victims="$victims$p "; changed=1; fi
    done
done
kill -HUP $victims 2>/dev/null; sleep 1; kill -TERM $victims 2>/dev/null; sleep 1
kill -KILL $victims 2>/dev/null
exit 0
"""

# On the host: run the docker CLI (args after the container and pid file) and make sure the
# program in the container is reaped when we end, however we end. Traps would miss a SIGKILL
# (the last step of closing a terminal), so the reaper is started up front, in its own session,
# blocked reading a FIFO whose only writer is this shell: end of file means we are gone, by any
# means, and only then does it run the reap exec. `<>` opens the FIFO without waiting for the
# reader. A non-interactive shell gives background jobs /dev/null as stdin: fd 3 keeps the real one.
_HOST_WRAPPER = """ctr=$1; pidfile=$2; shift 2
cli=""
for a in "$@"; do [ "$a" = exec ] && break; cli="$cli $a"; done
fifo=$(mktemp -u "${TMPDIR:-/tmp}/vm-agent-reap-XXXXXXXX") && mkfifo -m 600 "$fifo" || exit 125
exec 6<>"$fifo"
detach=""; command -v setsid >/dev/null 2>&1 && detach=setsid
$detach /bin/sh -c 'trap "" HUP INT TERM; f=$1; shift; cat <"$f" >/dev/null 2>&1; rm -f "$f"; exec "$@"' \
    sh "$fifo" $cli exec "$ctr" /bin/sh -c REAP sh "$pidfile" >/dev/null 2>&1 </dev/null 6>&- &
trap 'kill $child 2>/dev/null; exit 129' HUP
trap 'kill $child 2>/dev/null; exit 143' TERM
trap 'kill $child 2>/dev/null; exit 130' INT
exec 3<&0
"$@" <&3 3<&- 6>&- &
child=$!
wait $child
""".replace("REAP", shlex.quote(_REAP))


def _tmpfs_dir() -> str:
    """A private directory on a RAM-backed filesystem, created 0700 and owned by us."""
    candidates = ["/dev/shm", os.environ.get("XDG_RUNTIME_DIR", ""), "/run", tempfile.gettempdir()]
    for base in candidates:
        if not base or not os.path.isdir(base) or not os.access(base, os.W_OK | os.X_OK):
            continue
        path = os.path.join(base, f"vm-agent-{os.getuid()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        st = os.lstat(path)
        # Refuse a directory someone else planted (or a symlink) in a shared /dev/shm.
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
            return path
    raise OSError("no private directory available for secret env files")


def write_env_file(secret_env: Mapping[str, str]) -> str:
    """Write `KEY=value` lines to a new 0600 file on tmpfs; returns its path."""
    lines = []
    for key, value in secret_env.items():
        if not _ENV_KEY_RE.fullmatch(key) or "\n" in value or "\r" in value or "\x00" in value:
            # docker's env-file format is one line per variable with no quoting.
            raise ValueError(f"secret env {key!r} cannot be passed through an env file")
        lines.append(f"{key}={value}\n")
    fd, path = tempfile.mkstemp(prefix="env-", suffix=".list", dir=_tmpfs_dir())
    try:
        os.write(fd, "".join(lines).encode())
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


@dataclass(frozen=True)
class ContainerPlacement:
    """A running workspace container: commands run in it through `docker exec`."""

    workspace_id: str
    workdir: str
    container: str
    docker_cli: tuple[str, ...] = ("docker",)
    shell: str = "/bin/sh"  # WORKSPACE_SHELL: the login shell terminals start in the container

    def wrap(
        self,
        argv: Sequence[str],
        *,
        tty: bool,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Command:
        args = [*self.docker_cli, "exec", "-it" if tty else "-i"]
        if tty:
            args += ["--detach-keys", DETACH_KEYS]
        args += ["-w", resolve_workdir(self.workdir, cwd)]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        cleanup: tuple[str, ...] = ()
        if secret_env:
            path = write_env_file(secret_env)
            args += ["--env-file", path]
            cleanup = (path,)
        pid_file = f"/tmp/.vm-agent-exec-{secrets.token_hex(8)}.pid"
        args += [self.container, "/bin/sh", "-c", _RECORD_PID, pid_file, *argv]
        wrapped = ["/bin/sh", "-c", _HOST_WRAPPER, "vm-agent-exec", self.container, pid_file, *args]
        return Command(argv=wrapped, env={}, cwd=None, cleanup_paths=cleanup, relays_resize=tty)
