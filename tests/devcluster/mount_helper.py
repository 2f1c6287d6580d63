"""Runs first in a container's own mount namespace: the pod's volumes at their mount paths, the
host paths that stand in for the image kept reachable, nothing written to the machine's own
filesystem; then the container's command.

Started by the node agent as ``python -S mount_helper.py SPEC ARGV...`` (standard library only,
no site, so it cannot depend on anything a mount hides), where SPEC is JSON::

    {"mounts": [[source, target, read_only], ...], "keep": [path, ...]}

with mounts ordered parents before children. Why it works the way it does:

* Every source and every kept path is opened (``O_PATH``) before anything is mounted, and from
  then on only the descriptors are used, also to tell a directory from a file: a volume mounted
  on ``/tmp`` hides everything under ``/tmp`` by path, including the sources of the volumes
  after it and the checkout the container runs from.
* A mount point missing on this machine (``/var/run/secrets/...``) is made on a tmpfs laid over
  its nearest existing ancestor, with that ancestor's entries bound back in. The container sees
  the directory, the machine never gets it: a directory left behind by one run would let the
  next pass by luck.
* A kept path that a volume hides (the checkout, its virtualenv, the interpreter, the cluster
  directory, when they live under a volume's mount path such as ``/tmp``) is bound back at the
  same path inside the volume, as an image's own files would be there in a real container.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
_libc = ctypes.CDLL(None, use_errno=True)


class MountError(Exception):
    """What could not be set up, in words that name the path and what to change."""


def _mount(
    source: bytes | None,
    target: str,
    flags: int,
    fstype: bytes | None = None,
    data: bytes | None = None,
) -> None:
    if _libc.mount(source, target.encode(), fstype, flags, data) != 0:
        raise MountError(f"mount {target}: {os.strerror(ctypes.get_errno())}")


def _bind(fd: int, target: str, read_only: bool = False) -> None:
    _mount(f"/proc/self/fd/{fd}".encode(), target, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _is_dir(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _shadow(directory: str) -> None:
    """Lay a tmpfs over ``directory`` with each of its entries bound back in: the same view,
    but what is created there afterwards lives in memory, in this mount namespace only."""
    if directory == "/":
        raise MountError(
            "cannot create a top-level directory without writing to this machine's root; "
            "use a mount path under an existing directory (e.g. /var/run, /tmp, /etc)"
        )
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    entries: list[tuple[str, str | int]] = []
    for name in os.listdir(dir_fd):
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            entries.append((name, os.readlink(name, dir_fd=dir_fd)))
        else:
            entries.append((name, os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)))
    mode = stat.S_IMODE(os.fstat(dir_fd).st_mode)
    _mount(b"tmpfs", directory, 0, b"tmpfs", f"mode={mode:o}".encode())
    for name, link_or_fd in entries:
        path = os.path.join(directory, name)
        if isinstance(link_or_fd, str):
            os.symlink(link_or_fd, path)
            continue
        _make(path, directory=_is_dir(link_or_fd))
        _bind(link_or_fd, path)
        os.close(link_or_fd)
    os.close(dir_fd)


def _make(path: str, *, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _mount_point(path: str, *, directory: bool, writable: list[str]) -> None:
    """Make ``path`` exist as a directory or a file, writing only inside ``writable`` roots
    (mounted volumes and shadows); anywhere else the nearest existing ancestor is shadowed."""
    if os.path.exists(path):
        if os.path.isdir(path) != directory:
            wanted, found = ("directory", "file") if directory else ("file", "directory")
            raise MountError(f"mount {path}: a {wanted} is to be mounted on a {found}")
        return
    base = _nearest_existing(path)
    if not any(_under(base, root) for root in writable):
        _shadow(base)
        writable.append(base)
    try:
        _make(path, directory=directory)
    except OSError as exc:
        raise MountError(f"mount {path}: cannot create the mount point: {exc.strerror}") from exc


def apply(mounts: list[tuple[str, str, bool]], keep: list[str]) -> None:
    """Mount the volumes, then bring back every kept path a volume hid."""
    volumes = []
    for source, target, read_only in mounts:
        try:
            volumes.append((os.open(source, os.O_PATH), os.path.realpath(target), read_only))
        except OSError as exc:
            raise MountError(f"mount {target}: its source {source}: {exc.strerror}") from exc
    kept = [
        (os.open(path, os.O_PATH), os.path.realpath(path))
        for path in sorted(keep, key=len)
        if os.path.exists(path)
    ]
    writable: list[str] = []
    mounted: list[tuple[str, bool]] = []  # (mount point, is a volume)
    for fd, target, read_only in volumes:
        _mount_point(target, directory=_is_dir(fd), writable=writable)
        _bind(fd, target, read_only)
        os.close(fd)
        writable.append(target)
        mounted.append((target, True))
    for fd, path in kept:
        covering = [(point, volume) for point, volume in mounted if _under(path, point)]
        if covering:
            point, volume = max(covering, key=lambda item: len(item[0]))
            if volume and point != path:
                _mount_point(path, directory=_is_dir(fd), writable=writable)
                _bind(fd, path)
                mounted.append((path, False))
        os.close(fd)


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    try:
        apply([(s, t, bool(r)) for s, t, r in spec["mounts"]], list(spec.get("keep", ())))
    except MountError as exc:
        sys.exit(str(exc))
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
