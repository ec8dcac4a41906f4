"""Build the offline workspace test image (see README.md next to this file)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import docker

IMAGE_REPO = "vm-agent-test-workspace"
BUSYBOX = Path("/bin/busybox")
GIT_FILES = [Path("/usr/bin/git"), Path("/usr/lib/git-core/git-remote-http")]
GIT_TEMPLATES = Path("/usr/share/git-core/templates")
DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/root
LABEL vm-agent.test=1
WORKDIR /root
"""


class ImageUnavailable(RuntimeError):
    """The host lacks what the image is made of (busybox-static, git)."""


def _shared_libraries(binary: Path) -> set[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/"):
                libs.add(Path(word))
    return libs


def _files() -> dict[Path, Path]:
    """Destination path in the image -> source path on the host."""
    if not BUSYBOX.exists():
        raise ImageUnavailable("/bin/busybox missing: apt-get install busybox-static")
    for path in GIT_FILES:
        if not path.exists():
            raise ImageUnavailable(f"{path} missing: apt-get install git")
    files = {BUSYBOX: BUSYBOX}
    for binary in GIT_FILES:
        files[binary] = binary
        for lib in _shared_libraries(binary):
            files[lib] = lib
    return files


def _digest(files: dict[Path, Path]) -> str:
    h = hashlib.sha256(DOCKERFILE.encode())
    for dest in sorted(files):
        st = files[dest].stat()
        h.update(f"{dest}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


def _context(files: dict[Path, Path], workdir: Path) -> None:
    root = workdir / "rootfs"
    for dest, src in files.items():
        target = root / dest.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=True)
    core = root / "usr/lib/git-core"
    os.symlink("git-remote-http", core / "git-remote-https")
    if GIT_TEMPLATES.is_dir():
        shutil.copytree(GIT_TEMPLATES, root / GIT_TEMPLATES.relative_to("/"))
    for name in ("tmp", "root", "bin", "etc", "workspaces"):
        (root / name).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (workdir / "Dockerfile").write_text(DOCKERFILE)


def _remove_stale(client: docker.DockerClient, current: str) -> None:
    """Drop this image's older builds (another host binary or fake agent) so they do not pile up."""
    repo = current.rsplit(":", 1)[0]
    for image in client.images.list(name=repo):
        if current not in image.tags:
            try:
                client.images.remove(image.id, force=False)
            except docker.errors.APIError:
                pass  # still used by a container, or a base of the current build


def ensure_image(client: docker.DockerClient, scratch: Path) -> str:
    """The tag of the test image, building it when this host's version of it does not exist."""
    files = _files()
    tag = f"{IMAGE_REPO}:{_digest(files)}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    workdir = scratch / "image-context"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    _context(files, workdir)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(workdir, arcname=".")
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True)
    shutil.rmtree(workdir, ignore_errors=True)
    _remove_stale(client, tag)
    return tag


PYTHON = Path("/usr/bin/python3.11")
PYTHON_LIB = Path("/usr/lib/python3.11")
FAKE_AGENT = Path(__file__).resolve().parents[1] / "fakes" / "fake_acp_agent.py"
FAKE_AGENT_IN_IMAGE = "/opt/fakes/fake_acp_agent.py"
_SKIPPED_STDLIB = {"test", "__pycache__", "site-packages", "dist-packages", "idlelib", "tkinter",
                   "ensurepip", "lib2to3", "turtledemo"}


def _python_files() -> dict[Path, Path]:
    if not PYTHON.exists() or not PYTHON_LIB.is_dir():
        raise ImageUnavailable(f"{PYTHON} missing: apt-get install python3")
    files = {PYTHON: PYTHON}
    binaries = [PYTHON, *PYTHON_LIB.glob("lib-dynload/*.so")]
    for binary in binaries:
        for lib in _shared_libraries(binary):
            files[lib] = lib
    return files


def ensure_python_image(client: docker.DockerClient, scratch: Path, base: str) -> str:
    """The test image plus Debian's Python and the fake ACP agent: agents run inside workspaces."""
    files = _python_files()
    h = hashlib.sha256(base.encode() + FAKE_AGENT.read_bytes())
    h.update(_digest(files).encode())
    tag = f"{IMAGE_REPO}-python:{h.hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    workdir = scratch / "python-context"
    shutil.rmtree(workdir, ignore_errors=True)
    root = workdir / "rootfs"
    for dest, src in files.items():
        target = root / dest.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=True)
    shutil.copytree(PYTHON_LIB, root / PYTHON_LIB.relative_to("/"), dirs_exist_ok=True,
                    ignore=lambda _d, names: [n for n in names if n in _SKIPPED_STDLIB])
    os.symlink("python3.11", root / "usr/bin/python3")
    agent = root / FAKE_AGENT_IN_IMAGE.lstrip("/")
    agent.parent.mkdir(parents=True)
    shutil.copy2(FAKE_AGENT, agent)
    (workdir / "Dockerfile").write_text(f"FROM {base}\nCOPY rootfs/ /\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(workdir, arcname=".")
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True)
    shutil.rmtree(workdir, ignore_errors=True)
    _remove_stale(client, tag)
    return tag
