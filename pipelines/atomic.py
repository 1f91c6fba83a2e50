"""The one way the pipeline commits a file: write `.<name>.tmp-<random>` beside it, fsync, rename, fsync the folder.

Why every writer goes through here:
- A reader (or a resumed run) sees the old file or the new one, never half of one: resume trusts a file that
  exists under its final name, so a crash must not leave a truncated shard there.
- The rename is atomic at once but durable only after the data and the folder entry reach the disk. Without
  the fsyncs a power cut or node failure can bring back a file under its final name with data that never got
  written, which a resumed week-long run would then build on. They cost well under a millisecond per file.
- The `.<name>.tmp-` prefix is a convention other code relies on: listings skip dot entries, and the
  publisher sweeps them as garbage.

Remote fsspec targets (s3, gcs) get the same temp-then-move shape; durability there is the store's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec


def temp_name(path: str | os.PathLike) -> str:
    """The hidden temp name beside `path` (same folder, so the rename never crosses filesystems)."""
    path = os.fspath(path)
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    temp = f".{name}.tmp-{uuid.uuid4().hex[:12]}"
    return f"{folder}/{temp}" if folder else temp


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or new entry in `path` durable.

    Some network and FUSE filesystems refuse fsync on a folder (EINVAL, ENOTSUP); there the rename is as
    durable as that filesystem makes it, and failing the run would protect nothing.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def sync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under `root`, before the folder is renamed into place."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def commit(temp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Durably rename a finished local temp file onto `final` (folders: `commit_dir`)."""
    fsync_file(temp)
    os.replace(temp, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))


def commit_dir(temp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Durably rename a filled temp folder to `final`; fails if `final` exists and is not empty (POSIX rename
    replaces an empty folder; callers that must not replace one check first)."""
    sync_tree(temp)
    os.rename(temp, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A local temp path to write `path` through: committed when the block ends, removed if it raises."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(path)
    try:
        yield temp
        commit(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> str:
    """Write a whole file atomically and durably (local paths and fsspec URLs); return its path."""
    fs, fs_path = fsspec.core.url_to_fs(os.fspath(path))
    parent = fs_path.rsplit("/", 1)[0] if "/" in fs_path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    temp = temp_name(fs_path)
    try:
        with fs.open(temp, "wb") as f:
            f.write(data)
        if is_local(fs):
            commit(temp, fs_path)
        else:
            fs.mv(temp, fs_path)
    except BaseException:
        if fs.exists(temp):
            fs.rm(temp)
        raise
    return fs_path


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps: Any) -> str:
    """`json.dumps(data, **dumps)` written with `write_bytes_atomic`."""
    return write_bytes_atomic(path, json.dumps(data, **dumps).encode("utf-8"))


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Hard-link `source` as `target`, or copy it where links are impossible (another device or filesystem).

    For files nobody writes again (kept shards, MinHash index files): a second name costs no disk.
    """
    try:
        os.link(source, target)
    except OSError:  # no hard links here: a copy is just slower (a missing source fails there too)
        shutil.copy2(source, target)


def copy_atomic(source: str | os.PathLike, target: str | os.PathLike, link: bool = False) -> None:
    """Copy a local file (`link=True`: `link_or_copy` it) so that `target` appears complete or not at all."""
    with atomic_path(target) as temp:
        if link:
            link_or_copy(source, temp)
        else:
            shutil.copyfile(source, temp)
