"""Writing a file so that it appears whole or not at all: the one atomic writer every module uses.

A file is written under a unique hidden temporary name in its final folder (``.tmp-<name>-<random>.partial``;
readers never match it), fsynced, renamed into place, and the folder fsynced. A writer killed mid-way leaves at
most a temporary file; concurrent writers of one path never share one, and the last rename wins.
``create_exclusive`` makes a file only if its name is free (a hard link: atomic and exclusive, also on NFS).
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(path) as tmp: <write the file tmp>``: ``path`` holds either its old content or the
    whole of what was written to ``tmp``, even if the process is killed or the disk fills. ``tmp`` is a unique
    new file in the same folder (concurrent writers of one path never share one; the last rename wins); on a
    clean exit it is fsynced and renamed over ``path`` and the folder fsynced; on an error it is removed.
    Makes the folder if needed. For a writer that needs a path (a memory map); others use :func:`atomic_file`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-", suffix=".partial")
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """``with atomic_file(path) as f: f.write(...)``: :func:`atomic_path` with the temporary file open for
    writing (binary)."""
    with atomic_path(path) as tmp, io.BufferedWriter(_FileDescriptor(os.open(tmp, os.O_WRONLY))) as f:
        yield f


class _FileDescriptor(io.RawIOBase):
    """A raw stream over ``fd`` that writes with ``os.write`` until all is written (``os.write`` may write less
    than asked); closing it closes ``fd``."""

    def __init__(self, fd: int):
        self.fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self.fd, view):]
        return len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_file` (e.g. a fine-tuned checkpoint)."""
    import torch  # the lower half's files need no torch to import this module

    with atomic_file(path) as f:
        torch.save(obj, f)
    return Path(path)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def create_exclusive(folder: Path, name: str, data: bytes) -> bool:
    """Create ``folder/name`` holding ``data`` if it does not exist: written to a temporary file, then
    hard-linked to its name (atomic and exclusive, also on NFS). False when the name exists."""
    folder = Path(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{name}-", suffix=".partial")
    try:
        with io.BufferedWriter(_FileDescriptor(fd)) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    target = folder / name
    try:
        os.link(tmp, target)
        created = True
    except FileExistsError:
        created = False
    except OSError as err:
        if err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):  # no hard links here
            created = _create_exclusive_without_links(target, data)
        else:  # NFS may report a failed link that did happen (a retransmitted request): look at the inode
            try:
                created = os.stat(tmp).st_nlink == 2
            except OSError:
                created = False
            if not created:
                raise
    finally:
        Path(tmp).unlink(missing_ok=True)
    if created:
        fsync_folder(folder)
    return created


def _create_exclusive_without_links(target: Path, data: bytes) -> bool:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with io.BufferedWriter(_FileDescriptor(fd)) as f:
        f.write(data)
        f.flush()
        os.fsync(fd)
    return True
