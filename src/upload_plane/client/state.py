"""Where the client keeps what outlives a process: resume state and stored credentials.

Resume state is one small JSON file per (API, absolute path, log) under
``$XDG_STATE_HOME/upload-plane/uploads/`` (default ``~/.local/state``), and one per batch of small
files (``batch-*.json``: the batch's Idempotency-Key and exactly the files it sent). It is written atomically
(temporary file, fsync, rename) before an upload is started (with the start's Idempotency-Key),
right after it started, and again as parts finish, so a Ctrl-C, a SIGKILL or a power cut leaves
either the previous or the new version, never a torn one. The store
stays the authority on which parts exist; the file names the upload and remembers each sent part's
CRC64NVME (so a changed file is noticed even on a store that does not report part checksums).

Credentials live in ``$XDG_CONFIG_HOME/upload-plane/credentials.json`` (default ``~/.config``), mode
0600 in a 0700 directory: per API URL, a personal access token and its id; plus the API URL of the
last login, used when neither ``--api`` nor ``UPLOAD_PLANE_API_URL`` says otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

APP = "upload-plane"


def state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / APP


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / APP


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_atomically(path: Path, document: Any) -> None:
    """Write JSON to ``path`` (mode 0600) so that readers see the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any:
    """The document at ``path``, or ``None`` when it is missing or unreadable (torn files cannot
    happen, but a hand-edited one can)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- resume state ----------------------------------------------------------------------------------


@dataclass
class ResumeState:
    """What a returning client needs to continue an upload of the same, unchanged file.

    It is first written before the upload is started, with only ``start_key`` (the start's
    Idempotency-Key) and an empty ``upload_id``: a client that dies before the answer is recorded
    sends the start again with that key and gets the same upload back, instead of leaving one open.
    """

    api_url: str
    path: str
    log_id: str
    size: int
    mtime_ns: int
    upload_id: str  # "" until the start has answered
    part_size: int
    part_count: int
    parts: dict[str, str] = field(default_factory=dict)  # part number -> CRC64NVME (base64), as sent
    start_key: str = ""


@dataclass
class BatchState:
    """A batch of small files, kept from before its start is sent until its results were reported:
    sent again with the same key and exactly the same ``files`` (the API derives each file's upload
    from the key and its place), it answers the same uploads, so a client killed at any point
    continues them instead of starting copies, and asks the store before sending a file again."""

    api_url: str
    log_id: str
    key: str  # the batch's Idempotency-Key
    files: list[dict[str, Any]]  # the start's entries, in order, as sent
    paths: list[str]  # the local file of each entry
    mtimes_ns: list[int]  # each file's mtime when it was read


class ResumeStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_home() / "uploads"

    def _file(self, api_url: str, path: str, log_id: str) -> Path:
        key = hashlib.sha256(json.dumps([api_url, path, log_id]).encode()).hexdigest()[:32]
        return self.root / f"{key}.json"

    def load(self, api_url: str, path: str, log_id: str) -> ResumeState | None:
        doc = read_json(self._file(api_url, path, log_id))
        if not isinstance(doc, dict):
            return None
        try:
            state = ResumeState(**doc)
        except TypeError:
            return None
        return state if (state.api_url, state.path, state.log_id) == (api_url, path, log_id) else None

    def save(self, state: ResumeState) -> None:
        private_dir(self.root)
        write_atomically(self._file(state.api_url, state.path, state.log_id), asdict(state))

    def forget(self, state: ResumeState) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(state.api_url, state.path, state.log_id).unlink()

    def _batch_file(self, state: BatchState) -> Path:
        key = hashlib.sha256(json.dumps([state.api_url, state.log_id, state.key]).encode()).hexdigest()[:32]
        return self.root / f"batch-{key}.json"

    def save_batch(self, state: BatchState) -> None:
        private_dir(self.root)
        write_atomically(self._batch_file(state), asdict(state))

    def batches(self, api_url: str, log_id: str) -> list[BatchState]:
        """The batches kept for this API and log (oldest first)."""
        found = []
        for path in sorted(self.root.glob("batch-*.json"), key=lambda p: p.stat().st_mtime_ns):
            doc = read_json(path)
            try:
                state = BatchState(**doc) if isinstance(doc, dict) else None
            except TypeError:
                state = None
            if state is not None and (state.api_url, state.log_id) == (api_url, log_id):
                found.append(state)
        return found

    def forget_batch(self, state: BatchState) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._batch_file(state).unlink()


# -- credentials -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    api_url: str
    username: str
    token: str
    token_id: str
    expires_at: str


class CredentialStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_home() / "credentials.json"

    def _read(self) -> dict[str, Any]:
        doc = read_json(self.path)
        if not isinstance(doc, dict) or not isinstance(doc.get("logins"), dict):
            return {"default_api_url": None, "logins": {}}
        return doc

    def default_api_url(self) -> str | None:
        value = self._read().get("default_api_url")
        return value if isinstance(value, str) else None

    def get(self, api_url: str) -> Login | None:
        entry = self._read()["logins"].get(api_url)
        try:
            return Login(**entry) if isinstance(entry, dict) else None
        except TypeError:
            return None

    def put(self, login: Login) -> None:
        doc = self._read()
        doc["logins"][login.api_url] = asdict(login)
        doc["default_api_url"] = login.api_url
        private_dir(self.path.parent)
        write_atomically(self.path, doc)

    def remove(self, api_url: str) -> None:
        doc = self._read()
        doc["logins"].pop(api_url, None)
        if doc.get("default_api_url") == api_url:
            doc["default_api_url"] = None
        if self.path.exists():
            write_atomically(self.path, doc)
