"""The crash-safe dataset writer (the format, version 1, is docs/dataset-format.md and dataset/).

Write order makes a crash harmless: the image goes to a temporary file, is fsynced and renamed
into place; only then is its metadata line (with the image's sha256) appended and fsynced. So a
metadata line never names a missing or partial file, and a torn last line is the only damage a
power cut can do; the reader ignores it and the next writer cuts it off. Images are encoded in a
writer thread fed by a bounded queue, so encoding overlaps the rig's next motion.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.events import utc_now
from dataset.jsonl import read_jsonl
from dataset.layout import SIDES, DatasetError, catalog_name, validate_coin_id
from dataset.outputs import check_dataset_folder
from dataset.reader import DatasetReader, default_collection
from dataset.schema import DatasetInfo

__all__ = [
    "DatasetLock",
    "DatasetLocked",
    "DatasetWriteError",
    "DatasetWriter",
    "atomic_write",
    "encode_image",
]


class DatasetLocked(DatasetError):
    """Another process holds the dataset's lock file."""


class DatasetWriteError(DatasetError):
    """Writing an image or a metadata line failed; nothing partial was left behind."""

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write, flush and fsync a new file (one place for tests to inject ENOSPC)."""
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename into place, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_bytes(temp, data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _mend_tail(path: Path) -> None:
    """Cut a torn last line (a crash tore the last append), end a whole one that lacks its newline.

    Only a writer's own interrupted append is torn (dataset.jsonl); check_dataset_folder has
    refused a file with any other bad line, so nothing else is ever cut.
    """
    content = read_jsonl(path)
    if content.torn:
        os.truncate(path, content.good_bytes)
    elif content.unterminated:
        # A whole line another tool wrote without its newline: end it, never cut it.
        with path.open("ab") as handle:
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())


def encode_image(image: np.ndarray, ext: str, pixel_format: str, png_compression: int) -> bytes:
    """Encode to PNG/TIFF/JPEG bytes; 16-bit frames stay 16-bit (PNG, TIFF)."""
    array = np.ascontiguousarray(image)
    if array.ndim == 3 and array.shape[2] == 3 and not pixel_format.upper().startswith("BGR"):
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)  # frames are RGB, OpenCV writes BGR
    params: list[int] = []
    if ext == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    elif ext in ("jpg", "jpeg"):
        if array.dtype != np.uint8:
            array = (array / 257).astype(np.uint8)
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    ok, buffer = cv2.imencode(f".{ext}", array, params)
    if not ok:
        raise DatasetWriteError(f"OpenCV could not encode a {array.dtype} image as {ext}")
    return buffer.tobytes()


def _write_new(path: Path, content: bytes, flag: int) -> None:
    """Create (with `flag`: O_EXCL or O_TRUNC) and write a small file.

    No fsync: a lock only matters while its process lives; one a power cut left empty is stale.
    """
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | flag, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


# A lock file left empty (a writer killed between creating and filling it, by an older coinrig
# or on a filesystem without hard links) is stale once it is this old: a live writer fills it
# within microseconds.
EMPTY_LOCK_GRACE_S = 5.0


class DatasetLock:
    """One writer per dataset: a lock file naming its process; a dead owner's lock is taken over.

    The lock appears whole or not at all: the owner is written to a temporary file and
    hard-linked to `.lock` (link fails if `.lock` exists, as O_EXCL does). So a kill -9 at any
    moment never leaves a lock that names nobody.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / ".lock"
        self._held = False

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            DatasetLocked: a live process (or one on another host) holds it.
        """
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}
        content = (json.dumps(owner) + "\n").encode()
        for _ in range(3):
            try:
                self._create(content)
            except FileExistsError:
                if not self._stale():
                    raise DatasetLocked(
                        f"{self.path.parent} is in use by {self._holder()}; "
                        f"remove {self.path} if that process is gone"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            except FileNotFoundError:
                continue  # the holder's clean-up took our temporary file: look again
            self._held = True
            return
        raise DatasetLocked(f"could not take {self.path}")

    def _create(self, content: bytes) -> None:
        """Create `.lock` with its whole content, or raise FileExistsError."""
        # The temporary name is one the writer's clean-up of crashed temporaries removes.
        temp = self.path.with_name(f".lock.tmp-{os.getpid()}")
        try:
            _write_new(temp, content, os.O_TRUNC)
            try:
                os.link(temp, self.path)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # No hard links here (exFAT, some network shares): O_EXCL, filled at once.
                _write_new(self.path, content, os.O_EXCL)
        finally:
            temp.unlink(missing_ok=True)

    def _holder(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return "another process"
        return text or "a process that has not yet written its name"

    def _stale(self) -> bool:
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return False
        if not text.strip():
            return age > EMPTY_LOCK_GRACE_S  # a writer killed before it could fill it
        try:
            owner = json.loads(text)
            pid, host = int(owner["pid"]), owner["host"]
        except (ValueError, KeyError, TypeError):
            return False  # something else wrote it: a person must look
        if host != socket.gethostname():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False


@dataclass(frozen=True)
class _Job:
    file_name: str
    image: np.ndarray | bytes  # bytes: already encoded, stored exactly as given
    pixel_format: str
    record: dict[str, Any]


class DatasetWriter:
    """Writes images and metadata crash-safely; use as a context manager (takes the lock)."""

    def __init__(
        self,
        root: Path | str,
        *,
        software: str = "coinrig",
        queue_size: int = 8,
        image_format: str = "png",
        png_compression: int = 1,
    ) -> None:
        self.root = Path(root)
        self.software = software
        self.image_format = image_format
        self.png_compression = png_compression
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._lock = DatasetLock(self.root)
        self._thread: threading.Thread | None = None
        self._meta: Any = None
        self._coins: set[str] = set()
        self._guard = threading.Lock()
        self.written: list[dict[str, Any]] = []
        self.error: DatasetWriteError | None = None

    # ------------------------------------------------------------ lifecycle
    def open(self) -> DatasetWriter:
        """Create or check the folder, take the lock, cut a torn line, start the writer thread.

        Raises:
            DatasetLocked: another writer holds the dataset.
            OutputPathError: the folder is not new, empty or a dataset, or cannot be written.
            DatasetFormatError: it holds a damaged dataset (NotADataset: another format).
            DatasetWriteError: creating the folder, the lock or dataset.json failed.
        """
        # Before anything is written: a foreign folder is never taken over, a damaged dataset
        # never appended to (its torn last lines, the writer's own, are no damage).
        check_dataset_folder(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise _write_error(exc, f"{self.root}/.lock") from exc
        try:
            info_path = self.root / "dataset.json"
            if not info_path.exists():
                created = utc_now()
                collection = default_collection(self.root, created)  # rename-safe identity
                info = DatasetInfo(
                    created=created, software=self.software, collection=collection
                ).model_dump()
                atomic_write(info_path, (json.dumps(info, indent=2) + "\n").encode())
            for name in ("images", "catalog", "sessions"):
                (self.root / name).mkdir(exist_ok=True)
            # Temporary files of a crashed writer (we hold the lock, so no live writer's):
            # never renamed, so never referenced. Session records and dataset.json are
            # written the same way, so a kill can leave one in sessions/ or the root too.
            temps = [*self.root.glob(".*.tmp-*"), *(self.root / "sessions").glob(".*.tmp-*")]
            for name in ("images", "catalog"):
                temps.extend((self.root / name).rglob(".*.tmp-*"))
            for temp in temps:
                temp.unlink(missing_ok=True)
            meta_path = self.root / "metadata.jsonl"
            _mend_tail(meta_path)
            _mend_tail(self.root / "coins.jsonl")  # add_coin appends the same way
            self._coins = {line.coin_id for line in DatasetReader(self.root).coin_lines()}
            self._meta = meta_path.open("ab")
        except OSError as exc:
            self._lock.release()
            raise _write_error(exc, str(self.root)) from exc
        except BaseException:
            self._lock.release()
            raise
        self._thread = threading.Thread(target=self._run, name="dataset-writer", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> DatasetWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drain the queue, stop the thread, release the lock (idempotent; never raises)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        self._lock.release()

    def flush(self) -> None:
        """Wait until every queued image is on disk.

        Raises:
            DatasetWriteError: a write failed (disk full, I/O error).
        """
        self._queue.join()
        self.check()

    def check(self) -> None:
        """Raise the writer thread's error, if it had one."""
        if self.error is not None:
            raise self.error

    # ------------------------------------------------------------ writing
    def submit(self, file_name: str, image: np.ndarray, record: dict[str, Any], fmt: str) -> None:
        """Queue an image and its metadata (blocks while the queue is full).

        Raises:
            DatasetWriteError: an earlier write failed; the dataset takes nothing more.
        """
        self._enqueue(_Job(file_name, image, fmt, {"file_name": file_name, **record}))

    def _enqueue(self, job: _Job) -> None:
        self.check()
        if self._thread is None:
            raise DatasetError("the dataset writer is not open")
        self._queue.put(job)

    def write_catalog_image(
        self,
        coin_id: str,
        side: str,
        image: np.ndarray | bytes,
        *,
        ext: str = "jpg",
        pixel_format: str = "RGB8",
        **fields: Any,
    ) -> str:
        """Queue a reference image (role catalog) as catalog/COIN_ID/SIDE.EXT; return its name.

        `image` is an array (encoded here) or the bytes of an already encoded file in the
        format `ext` names, stored exactly as given (a catalog JPEG is not compressed twice);
        the recorded sha256 is that of the stored bytes either way.

        Raises:
            ValueError: bad side or extension, or bytes that are not a decodable `ext` image.
            InvalidCoinId: the coin id is not a valid id.
            DatasetWriteError: an earlier write failed; the dataset takes nothing more.
        """
        validate_coin_id(coin_id)
        if side not in SIDES or ext not in _SIGNATURES:
            raise ValueError(f"bad catalog side {side!r} or extension {ext!r}")
        file_name = catalog_name(coin_id, side, ext)
        pixels = _decode_encoded(image, ext, file_name) if isinstance(image, bytes) else image
        record = {"coin_id": coin_id, "side": side, "role": "catalog", **fields}
        height, width = pixels.shape[:2]
        record.update(width=int(width), height=int(height), pixel_format=pixel_format)
        record.setdefault("captured_at", utc_now())
        self._enqueue(_Job(file_name, image, pixel_format, {"file_name": file_name, **record}))
        return file_name

    def add_coin(self, coin_id: str, **info: Any) -> None:
        """Append the coin to coins.jsonl unless it is already there."""
        validate_coin_id(coin_id)
        if coin_id in self._coins:
            return
        line = json.dumps({"coin_id": coin_id, **info}) + "\n"
        try:
            with (self.root / "coins.jsonl").open("ab") as handle:
                handle.write(line.encode())
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise _write_error(exc, "coins.jsonl") from exc
        self._coins.add(coin_id)

    def write_session(self, session_id: str, record: dict[str, Any]) -> None:
        """Atomically (re)write sessions/SESSION_ID.json."""
        path = self.root / "sessions" / f"{session_id}.json"
        try:
            atomic_write(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
        except OSError as exc:
            raise _write_error(exc, path.name) from exc

    # ------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self.error is None:  # after a failure, drop the rest: nothing half-written
                    self._write(job)
            except DatasetWriteError as exc:
                self.error = exc
            except Exception as exc:  # a bug or an encoder failure must still surface
                self.error = DatasetWriteError(f"{job.file_name if job else '?'}: {exc}")
            finally:
                self._queue.task_done()

    def _write(self, job: _Job) -> None:
        ext = job.file_name.rsplit(".", 1)[-1]
        if isinstance(job.image, bytes):
            data = job.image
        else:
            data = encode_image(job.image, ext, job.pixel_format, self.png_compression)
        record = {**job.record, "sha256": hashlib.sha256(data).hexdigest()}
        path = self.root / job.file_name
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise _write_error(exc, job.file_name) from exc
        line = (json.dumps(record, default=_json_default) + "\n").encode()
        before = self._meta.tell()
        try:
            self._meta.write(line)
            self._meta.flush()
            os.fsync(self._meta.fileno())
        except OSError as exc:
            # Undo both halves: no torn line, no image without its line (resume reshoots it).
            with contextlib.suppress(OSError):
                self._meta.truncate(before)
            path.unlink(missing_ok=True)
            raise _write_error(exc, "metadata.jsonl") from exc
        with self._guard:
            self.written.append(record)


#: the first bytes of each image format a catalog image may be stored as
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}


def _decode_encoded(data: bytes, ext: str, file_name: str) -> np.ndarray:
    """Decode already encoded image bytes, checking they are the format `ext` names.

    Raises:
        ValueError: the bytes are another format, or do not decode.
    """
    if not data.startswith(_SIGNATURES[ext]):
        raise ValueError(f"{file_name}: the bytes given are not a {ext} file")
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"{file_name}: the {ext} bytes given do not decode")
    return pixels


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write_error(exc: OSError, what: str) -> DatasetWriteError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    reason = "disk full" if full else str(exc)
    return DatasetWriteError(f"writing {what} failed: {reason}", disk_full=full)
