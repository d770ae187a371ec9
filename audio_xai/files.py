"""Files: written atomically, output folders claimed by one run, downloads checked before use, and
extractions that never leave half a dataset."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from audio_xai.errors import UsageError, UsageFileExistsError


class DownloadError(UsageError, RuntimeError):
    pass


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, size: int | None = None, md5: str | None = None) -> str | None:
    """Return why ``path`` is not the expected file, or None when it is."""
    if not path.is_file():
        return "missing"
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, expected {size}"
    if md5 is not None and md5sum(path) != md5:
        return f"md5 differs from {md5}"
    return None


def download(url: str, dest: str | Path, size: int | None = None, md5: str | None = None,
             manual_hint: str = "", timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` through a temporary file, check size and md5, then move it into place.

    An existing ``dest`` that passes the checks is reused; one that fails is replaced.
    """
    dest = Path(dest)
    if dest.exists() and verify(dest, size, md5) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or size
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        problem = verify(tmp, size, md5)
        if problem is not None:
            raise DownloadError(f"downloaded {url} is corrupt or incomplete ({problem}); it was discarded. "
                                f"Try again, or {manual_hint or f'place the file at {dest} by hand'}.")
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DownloadError(f"cannot download {url}: {err}. "
                            f"{manual_hint or f'Place the file at {dest} by hand'}.") from err
    finally:
        tmp.unlink(missing_ok=True)


def extract_zip_into(archive: Path, target: Path, marker: str) -> Path:
    """Extract ``archive`` and move the folder holding ``marker`` to ``target`` in one rename.

    Extraction happens in a temporary sibling folder, so an interrupted run leaves ``target``
    either absent or complete.
    """
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".extract.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as err:
            raise DownloadError(f"{archive} is not a valid zip archive ({err}); delete it and download again") from err
        found = sorted(tmp.rglob(marker), key=lambda p: len(p.parts))
        if not found:
            raise DownloadError(f"{archive} does not contain {marker}; is it the right archive?")
        top = found[0]
        for _ in Path(marker).parts:
            top = top.parent
        if target.exists():
            target.rmdir()  # only an empty placeholder folder may be replaced
        os.replace(top, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, so readers (and a
    run started after a crash) see the whole file or none of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; outputs are for whoever can read the folder
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def claim_folder(folder: str | Path):
    """Claim an output folder for this run: an exclusive lock on ``folder/.claim``, held until the returned
    file is closed or the process ends (so a killed run's claim goes with it, and its command can be run
    again). A folder that holds results, or that another running process has claimed, is refused."""
    import fcntl

    folder = Path(folder)
    if (folder / "results.csv").exists():
        raise UsageFileExistsError(f"{folder} already holds the results of an earlier run; choose another "
                                   f"--explainer.output_dir (or --trainer.default_root_dir), or move it away")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # the folder, or a folder above it, is a file
        raise UsageFileExistsError(f"{folder} cannot be an output folder: it or a folder above it is a file; choose "
                                   f"another --explainer.output_dir (or --trainer.default_root_dir)") from None
    handle = open(folder / ".claim", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise UsageFileExistsError(f"{folder} is being written by another run ({owner}); wait for it to end or "
                                   f"choose another --explainer.output_dir") from None
    if (folder / "results.csv").exists():  # finished between the first check and the lock
        handle.close()
        raise UsageFileExistsError(f"{folder} already holds the results of an earlier run; choose another "
                                   f"--explainer.output_dir (or --trainer.default_root_dir), or move it away")
    handle.truncate(0)
    handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def atomic_write(path: str | Path, write) -> Path:
    """Write a text file atomically; ``write`` gets the open file."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        write(f)
    return Path(path)


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence]) -> Path:
    def write(f):
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return atomic_write(path, write)


def write_json(path: str | Path, obj) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=str))
