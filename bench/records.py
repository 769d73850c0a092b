"""Run records: one JSON per run under ``results/<task>/``, written atomically, read back leniently.

Every write is atomic (temporary file in the same folder, then ``os.replace``), so an interrupted
write leaves the old file; a file that is not a record is skipped with a warning naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path, PurePosixPath

from backbones.files import AtomicFile
from tasks.recipes import TASK_DEFAULT

from .errors import BenchError

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "results"
REQUIRED_KEYS = ("task", "backbone", "variant", "metric", "cost", "schedule", "epochs", "seed", "data", "config",
                 "commit", "versions", "device", "wall_s")


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = AtomicFile(path)
    except OSError as e:
        raise BenchError(f"{path.parent}: results folder not writable ({e.strerror})") from None
    with out as f:
        f.write(data.encode() if isinstance(data, str) else data)


def check_writable(folder: Path) -> None:
    """Fail before training, not after, when the results folder cannot be written. The probe's name
    is unique per call: runs started together in one folder (a campaign's --parallel) must not remove
    each other's probe."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError as e:
        raise BenchError(f"{folder}: results folder not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _safe_name(name: str, what: str) -> str:
    """Task and run names become file names; they never leave the results folder."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise BenchError(f"{what} {name!r} cannot be a file name inside the results folder")
    return name


# ---------------------------------------------------------------- machine-free paths
#: an absolute path inside a string: a slash that starts a word (not "BNN/INT8", not "img/s")
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/<>-])/[\w.+-]+(?:/[\w.+=-]+)*/?")


def portable_path(path: str) -> str:
    """An absolute path as a committed record may hold it: relative to this repository, to the
    shared data root (``../shared/data/...``, the project's convention beside a checkout), or to a
    checkout's ``work_dirs``; anything else keeps its last two parts."""
    p = PurePosixPath(path)
    if not p.is_absolute():
        return path
    try:
        return p.relative_to(REPO.as_posix()).as_posix() or "."
    except ValueError:
        pass
    parts = p.parts
    for i in range(len(parts) - 1):
        if parts[i:i + 2] == ("shared", "data"):
            return "/".join(("..",) + parts[i:])
    if "work_dirs" in parts:
        return "/".join(parts[parts.index("work_dirs"):])
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages"):])
    return "/".join(("...",) + parts[-2:]) if len(parts) > 2 else parts[-1]


def portable(obj):
    """``obj`` (a record, a config dump, a log line) with every absolute path made ``portable_path``."""
    if isinstance(obj, str):
        return ABSOLUTE_PATH.sub(lambda m: portable_path(m.group(0)), obj)
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    return obj


# ---------------------------------------------------------------- run identity
#: options that enter a run's identity by their own key, not as "other options"
_NAMED_OPTIONS = ("model", "width", "head_precision", "init_from")


def dependency_hash(meta: dict) -> str:
    """Eight hex digits naming the run behind a checkpoint (its bench_run.json): the hash of its run
    name, or, for runs written before names came from the resolved config, of its machine-free args."""
    if meta.get("run"):
        key = meta["run"]
    else:
        fields = ("task", "backbone", "variant", "schedule", "epochs", "seed", "recipe", "task_options", "teacher")
        key = json.dumps(portable(dict({k: meta.get(k) for k in fields},
                                       data=PurePosixPath(str(meta.get("data") or "")).name)), sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def identity(task: str, backbone: str, variant, bench_cfg: dict, recipe: str, schedule: str, epochs: int,
             data: str, seed: int, options: dict, init_run: dict | None = None, teacher_run: dict | None = None,
             evaluated_run: dict | None = None) -> dict:
    """What makes two runs the same run: the resolved configuration (``bench_cfg`` is the config's
    ``bench`` section; ``options`` the task options with their defaults filled in; ``epochs`` the
    epochs trained, 0 when nothing was), with each checkpoint it depends on as ``dependency_hash``."""
    import tasks
    spec = getattr(tasks.TASKS.get(task), "OPTIONS", {})
    bench_cfg = bench_cfg or {}
    width = bench_cfg.get("width") or (bench_cfg.get("backbone") or {}).get("width")
    model = options.get("model") or (bench_cfg.get("model") if "model" in spec else None)
    others = {}
    for k, v in sorted(options.items()):
        if k in _NAMED_OPTIONS or v is None or (k in spec and v == spec[k].get("default")):
            continue
        others[k] = "+".join(PurePosixPath(x).name for x in str(v).split(",")) if "/" in str(v) else v
    return dict(task=task, model=model, backbone=backbone, variant=variant, width=width, recipe=recipe,
                head_precision=bench_cfg.get("head_precision"), schedule=schedule, epochs=epochs, data=data,
                seed=seed, options=others,
                init_from=dependency_hash(init_run) if init_run else None,
                teacher=dependency_hash(teacher_run) if teacher_run else None,
                evaluated=dependency_hash(evaluated_run) if evaluated_run else None)


def record_identity(r: dict) -> dict:
    """``identity`` of a written record (what the runner computed before it trained)."""
    bench_cfg = (r.get("config") or {}).get("bench") or {}
    options = r.get("task_options_resolved") or r.get("task_options") or {}
    evaluated = r.get("evaluated_run") or ({"run": PurePosixPath(r["evaluated_checkpoint"]).parent.name}
                                           if r.get("evaluated_checkpoint") else None)
    # records from before recipes existed trained with the task's own optimizer
    recipe = (r.get("recipe") or {}).get("name", TASK_DEFAULT)
    return identity(r["task"], r["backbone"], r["variant"], bench_cfg, recipe, r["schedule"], r["epochs"],
                    r["data"]["name"], r["seed"], options,
                    (r.get("init_from") or {}).get("run"), (r.get("teacher") or {}).get("run"), evaluated)


def run_name(ident: dict) -> str:
    """One file name per identity: backbone[-variant], model, width, recipe, head precision,
    schedule-epochs, data, other options, dependencies' hashes, seed; e.g.
    ``int8_centernet_w1_adamw_head-fp32_short-24ep_pennfudan_init-3fa2c1d0_s0``."""
    safe = lambda v: re.sub(r"[^A-Za-z0-9.+=-]+", "-", str(v)).strip(".-") or "-"  # noqa: E731
    i = ident
    parts = [i["backbone"] + (f"-{i['variant']}" if i["variant"] else "")]
    parts += [safe(i["model"])] if i["model"] else []
    parts += [f"w{i['width']:g}"] if isinstance(i["width"], (int, float)) else []
    parts += [i["recipe"]] if i["recipe"] else []
    parts += [f"head-{i['head_precision']}"] if i["head_precision"] else []
    parts += [f"{i['schedule']}-{i['epochs']}ep", safe(i["data"])]
    parts += [f"{safe(k)}-{safe(v)}" for k, v in i["options"].items()]
    parts += [f"{k.replace('_from', '')}-{i[k]}" for k in ("init_from", "teacher", "evaluated") if i.get(k)]
    return "_".join(parts) + f"_s{i['seed']}"


def record_of_checkpoint(ckpt, meta: dict, results_dirs) -> Path | None:
    """The record of the run that wrote ``ckpt`` (``meta``: its bench_run.json): by the run name it
    holds, else by the work dir the record's config names; None when no results dir has it."""
    work_dir = portable(Path(ckpt).resolve().parent.as_posix())
    for d in results_dirs:
        folder = Path(d) / str(meta.get("task", "classification"))
        if meta.get("run") and (folder / f"{meta['run']}.json").is_file():
            return folder / f"{meta['run']}.json"
        for f in sorted(folder.glob("*.json")):
            try:
                if json.loads(f.read_text()).get("config", {}).get("work_dir") == work_dir:
                    return f
            except (OSError, ValueError, AttributeError):
                continue
    return None


def write_record(record: dict, results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``record`` (made machine-free) as ``results_dir/<task>/<run>.json``. A rerun of the same
    configuration replaces its record; a file there of another configuration is never overwritten."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")
    path = Path(results_dir) / _safe_name(record["task"], "task") / f"{_safe_name(record['run'], 'run')}.json"
    if path.is_file():
        try:
            old = record_identity(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError):
            old = None  # not a record we can read: it is not replaced either
        new = record_identity(record)
        if old != new:
            diff = ", ".join(f"{k} {old[k]!r} vs {new[k]!r}" for k in new if old and old.get(k) != new[k])
            raise BenchError(f"{path} holds the record of another configuration ({diff or 'unreadable'}); "
                             "not overwritten")
    atomic_write(path, json.dumps(portable(record), indent=1, sort_keys=True, default=str) + "\n")
    return path


def _malformed(rec: dict) -> str | None:
    """What makes a record with every key unusable by the tables, or None."""
    m = rec["metric"]
    if not isinstance(m, dict) or not isinstance(m.get("name"), str) or "higher_is_better" not in m:
        return "its metric is not {name, value, higher_is_better}"
    if not isinstance(m.get("value"), (int, float)) or isinstance(m.get("value"), bool):
        return f"its metric value {m.get('value')!r} is not a number"
    if not isinstance(rec["cost"], dict) or not isinstance(rec["cost"].get("ops"), (int, float)):
        return "its cost has no OPs"
    if not isinstance(rec["data"], dict) or "name" not in rec["data"]:
        return "its data has no name"
    return None


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
            problem = problem or _malformed(rec)
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
    `bench deploy`, which names the run record it deployed); unreadable files are skipped with a warning,
    files of other deploy outputs (no task, no record) silently."""
    import warnings
    out = {}
    for f in sorted(Path(results_dir).glob("deploy/*/*.json")):
        try:
            d = json.loads(f.read_bytes().decode("utf-8"))
            if isinstance(d, dict) and "task" not in d and "record" not in d:
                continue  # another `bench deploy` output (the 224 benchmark, cycle counts), not a run's deployment
            out[(d["task"], Path(d["record"]).name)] = d
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"{f}: skipped, not a deploy record ({e.__class__.__name__}: {e})")
    return out

