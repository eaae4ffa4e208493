"""The model cache outside git: where built models live, their manifest, atomic builds.

    cache_root(cache_dir)       $TILT_CACHE_DIR, else $XDG_CACHE_HOME/tilt, else ~/.cache/tilt
    check_manifest(d, verify)   None if ``d`` holds a complete build (quick: manifest, files,
                                sizes; ``verify``: every file's sha256), else the reason
    building(final)             lock, clean stale temp dirs, yield a temp sibling; on success
                                rename it onto ``final`` at once, on any failure remove it
    Steps(progress)             named steps with messages (rich); a failing step becomes a
                                ``ModelSetupError`` that names it

A build never leaves a half-written model behind: it writes into ``.NAME.tmp-*`` next to the
final directory and renames at the end; a temp dir left by a killed run is removed by the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MANIFEST = "tilt-model.json"
MANIFEST_FORMAT = 1


class ModelSetupError(RuntimeError):
    """A model could not be set up; the message names the step and the fix (one line)."""

    def __init__(self, message: str, step: str | None = None):
        super().__init__(message)
        self.step = step


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Tilt cache directory (not created here)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("TILT_CACHE_DIR"):
        return Path(os.environ["TILT_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tilt"
    return Path.home() / ".cache" / "tilt"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entries(d: Path) -> dict[str, dict[str, Any]]:
    """{name: {size, sha256}} of every plain file in ``d`` (the manifest excluded)."""
    return {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(d.iterdir()) if p.is_file() and p.name != MANIFEST}


def write_manifest(d: Path, fields: dict[str, Any]) -> dict[str, Any]:
    manifest = {"format": MANIFEST_FORMAT, **fields, "files": file_entries(d)}
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(d / MANIFEST)
    return manifest


def read_manifest(d: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((Path(d) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def check_manifest(d: Path, expect: dict[str, Any], verify: bool = False) -> str | None:
    """None when ``d`` is a complete build whose manifest has the ``expect`` fields (nested
    dicts compared key by key); else a short reason. Quick check: files present with the
    recorded sizes; ``verify`` also re-hashes every file."""
    d = Path(d)
    if not d.is_dir():
        return "not built"
    m = read_manifest(d)
    if m is None:
        return f"no readable {MANIFEST}"
    if m.get("format") != MANIFEST_FORMAT:
        return f"manifest format {m.get('format')!r} (expected {MANIFEST_FORMAT})"
    for key, want in expect.items():
        have = m.get(key)
        if isinstance(want, dict):
            have = have if isinstance(have, dict) else {}
            bad = [k for k, v in want.items() if have.get(k) != v]
            if bad:
                return f"manifest {key}.{bad[0]} is {have.get(bad[0])!r}, expected {want[bad[0]]!r}"
        elif have != want:
            return f"manifest {key} is {have!r}, expected {want!r}"
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    for name, entry in files.items():
        p = d / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != entry.get("size"):
            return f"{name} has {p.stat().st_size} bytes, manifest says {entry.get('size')}"
        if verify and sha256_file(p) != entry.get("sha256"):
            return f"{name} does not match its sha256"
    return None


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def _clean_stale(final: Path) -> list[Path]:
    """Remove temp dirs of earlier interrupted builds (call with the lock held)."""
    stale = [p for p in final.parent.glob(_temp_prefix(final) + "*") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


@contextlib.contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """An exclusive lock on ``final``'s build (other processes wait)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield an empty temp dir next to ``final`` (call with ``build_lock`` held). On normal exit
    it replaces ``final`` (an old ``final`` is moved aside first and removed); on any exception,
    KeyboardInterrupt included, the temp dir is removed and the exception propagates."""
    _clean_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), dir=final.parent))
    try:
        yield tmp
        _publish_modes(tmp)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), dir=final.parent))
            final.replace(old / "old")
        tmp.replace(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish_modes(d: Path) -> None:
    """mkdtemp makes 0700 (and safetensors 0600): give the build the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    d.chmod(0o777 & ~umask)
    for p in d.iterdir():
        if p.is_file():
            p.chmod(0o666 & ~umask)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds (or will hold) ``path``; creates nothing."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class Steps:
    """Named build steps with progress messages. ``progress``: True (rich, to stderr), False
    (silent) or a callable taking one message."""

    def __init__(self, progress: bool | Callable[[str], None] = True, total: int | None = None):
        self.total = total
        self.count = 0
        self.t0 = time.monotonic()
        if callable(progress):
            self.say: Callable[[str], None] = progress
        elif progress:
            from rich.console import Console

            console = Console(stderr=True, highlight=False, soft_wrap=True)
            self.say = lambda msg: console.print(f"[bold cyan]tilt setup-model[/] {msg}")
        else:
            self.say = lambda msg: None

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        """Run one step; an exception (not KeyboardInterrupt) becomes a ModelSetupError."""
        self.count += 1
        of = f"/{self.total}" if self.total else ""
        self.say(f"[{self.count}{of}] {name}{': ' + detail if detail else ''}")
        t = time.monotonic()
        try:
            yield
        except ModelSetupError as exc:
            if exc.step is None:
                exc.step = name
            raise
        except Exception as exc:
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise ModelSetupError(f"step '{name}' failed: {type(exc).__name__}: {msg}",
                                  step=name) from exc
        self.say(f"    {name} done in {time.monotonic() - t:.1f} s")

    def done(self, msg: str) -> None:
        self.say(f"{msg} ({time.monotonic() - self.t0:.1f} s)")
