"""Run records: one JSON per run under ``results/<task>/``, written atomically, read back leniently.

Every write is atomic (temporary file in the same folder, then ``os.replace``), so an interrupted
write leaves the old file; a file that is not a record is skipped with a warning naming it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import BenchError

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
REQUIRED_KEYS = ("task", "backbone", "variant", "metric", "cost", "schedule", "epochs", "seed", "data", "config",
                 "commit", "versions", "device", "wall_s")


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise BenchError(f"{path.parent}: results folder not writable ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(folder: Path) -> None:
    """Fail before training, not after, when the results folder cannot be written."""
    atomic_write(Path(folder) / ".write-check", b"")
    (Path(folder) / ".write-check").unlink()


def _safe_name(name: str, what: str) -> str:
    """Task and run names become file names; they never leave the results folder."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise BenchError(f"{what} {name!r} cannot be a file name inside the results folder")
    return name


def write_record(record: dict, results_dir: Path = RESULTS_DIR) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")
    path = Path(results_dir) / _safe_name(record["task"], "task") / f"{_safe_name(record['run'], 'run')}.json"
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return path


def load_records(results_dir: Path = RESULTS_DIR, task: str | None = None) -> list[dict]:
    """Every record under ``results_dir/<task>/``; a file that is not a record is skipped with a
    warning naming it, so one bad file never stops the other tables from being rebuilt."""
    import warnings
    out = []
    for f in sorted(Path(results_dir).glob(f"{task or '*'}/*.json")):
        try:
            rec = json.loads(f.read_bytes().decode("utf-8"))
            problem = None if isinstance(rec, dict) else "not a JSON object"
            problem = problem or next((f"lacks {k!r}" for k in REQUIRED_KEYS if k not in rec), None)
            if problem is None and rec["task"] != f.parent.name:
                problem = f"its task {rec['task']!r} is not its folder's name"
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            problem = f"not valid UTF-8 JSON ({e})"
        if problem:
            warnings.warn(f"{f}: skipped, not a bench record: {problem}")
            continue
        rec["_file"] = f.relative_to(results_dir).as_posix()
        out.append(rec)
    return out




def load_deployments(results_dir: Path = RESULTS_DIR) -> dict:
    """{(task, record file name): deploy record} from ``results_dir/deploy/<task>/*.json`` (written by
    `bench deploy`, which names the run record it deployed); unreadable files are skipped with a warning."""
    import warnings
    out = {}
    for f in sorted(Path(results_dir).glob("deploy/*/*.json")):
        try:
            d = json.loads(f.read_bytes().decode("utf-8"))
            out[(d["task"], Path(d["record"]).name)] = d
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"{f}: skipped, not a deploy record ({e.__class__.__name__}: {e})")
    return out

