"""`bench campaign MANIFEST`: the runs a manifest lists (campaigns/*.toml), in dependency order,
several at once, each as its own `bench run` process under a time limit, until a deadline.

The records in the results folder are the state: a run whose record (tagged with the manifest, the
run's id and a hash of its spec) exists is done; a run with a checkpoint but no record resumes.
A run that fails does not stop the others; the runs that need it are skipped, each with a note."""
from __future__ import annotations

import dataclasses
import datetime as dt
import graphlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

from .errors import BenchError

REPO = Path(__file__).resolve().parent.parent
RUN_KEYS = {"id", "task", "backbone", "schedule", "seed", "recipe", "variant", "epochs", "options", "teacher",
            "init_from", "session", "limit_s", "est_s", "launcher", "data"}
DATA_KEYS = {"path", "archive", "source", "exclude", "per_class"}
CARRY_LIMIT = 64 * 2**20  # what the device tool takes in one call: the tree plus the carried paths
DEP_KEYS = ("teacher", "init_from")  # each names another run of the manifest by its id
MARGIN_S = 15  # a run is stopped this long before the deadline, so the call itself ends in time


@dataclasses.dataclass
class Run:
    id: str
    task: str
    backbone: str
    schedule: str
    seed: int = 0
    recipe: str | None = None
    variant: str | None = None
    epochs: int | None = None
    options: dict = dataclasses.field(default_factory=dict)
    teacher: str | None = None
    init_from: str | None = None
    session: int = 1
    limit_s: float | None = None
    est_s: float | None = None  # the manifest's fallback when no record measured this kind of run
    launcher: str = "none"
    data: str | None = None  # a [data.NAME] entry of the manifest (default: the one named as its task)

    def deps(self) -> list[str]:
        return [d for d in (self.teacher, self.init_from) if d]


@dataclasses.dataclass
class Manifest:
    path: Path
    name: str
    device: str
    runs: list[Run]
    data: dict  # name -> {"path", "archive", "source", "exclude", "per_class"}
    work_root: Path = REPO / "work_dirs" / "campaign"

    def run(self, run_id) -> Run:
        return next(r for r in self.runs if r.id == run_id)

    def data_of(self, run: Run) -> dict:
        return self.data.get(run.data or run.task, {})

    def spec(self, run: Run) -> str:
        """A hash of what makes the run's result, its dependencies' specs included: a changed run (or
        a changed teacher) is a new run, never the recorded one."""
        keys = ("task", "backbone", "schedule", "seed", "recipe", "variant", "epochs", "options", "launcher")
        spec = {k: getattr(run, k) for k in keys}
        spec.update({k: self.spec(self.run(getattr(run, k))) for k in DEP_KEYS if getattr(run, k)})
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def load_manifest(path) -> Manifest:
    """Read and check a manifest: every bad entry is one BenchError naming the file and the run."""
    import backbones
    import tasks
    from tasks.recipes import RECIPES, TASK_DEFAULT
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: campaign manifest not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: not a TOML manifest ({e})") from None
    where = lambda r: f"{path}: run {r.get('id', '?')!r}"  # noqa: E731
    runs = []
    for r in raw.get("run", []):
        unknown = set(r) - RUN_KEYS
        if unknown:
            raise BenchError(f"{where(r)}: unknown keys {sorted(unknown)} (known: {sorted(RUN_KEYS)})")
        missing = [k for k in ("id", "task", "backbone", "schedule") if k not in r]
        if missing:
            raise BenchError(f"{where(r)}: missing {', '.join(missing)}")
        if r["task"] not in tasks.TASKS:
            raise BenchError(f"{where(r)}: unknown task {r['task']!r} (one of {sorted(tasks.TASKS)})")
        task = tasks.get(r["task"])
        if r["backbone"] not in backbones.PRESETS and r["backbone"] not in task.BASELINES:
            raise BenchError(f"{where(r)}: unknown backbone {r['backbone']!r} (one of {sorted(backbones.PRESETS)}"
                             f"{' or ' + ', '.join(task.BASELINES) if task.BASELINES else ''})")
        if r["schedule"] not in task.SCHEDULES:
            raise BenchError(f"{where(r)}: task {r['task']} has no schedule {r['schedule']!r} "
                             f"(one of {', '.join(task.SCHEDULES)})")
        if r.get("recipe") is not None and r["recipe"] not in (*RECIPES, TASK_DEFAULT):
            raise BenchError(f"{where(r)}: unknown recipe {r['recipe']!r} (one of {', '.join(RECIPES)}, {TASK_DEFAULT})")
        unknown_opts = set(r.get("options", {})) - set(task.OPTIONS)
        if unknown_opts:
            raise BenchError(f"{where(r)}: task {r['task']} has no options {sorted(unknown_opts)} "
                             f"(its options: {', '.join(task.OPTIONS)})")
        if r.get("data") is not None and r["data"] not in raw.get("data", {}):
            raise BenchError(f"{where(r)}: no [data.{r['data']}] entry in the manifest")
        runs.append(Run(**r))
    for name, d in raw.get("data", {}).items():
        unknown = set(d) - DATA_KEYS
        if unknown:
            raise BenchError(f"{path}: [data.{name}]: unknown keys {sorted(unknown)} (known: {sorted(DATA_KEYS)})")
    if not runs:
        raise BenchError(f"{path}: no [[run]] entries")
    ids = [r.id for r in runs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise BenchError(f"{path}: run ids listed twice: {sorted(dup)}")
    for r in runs:
        for k in DEP_KEYS:
            dep = getattr(r, k)
            if dep and dep not in ids:
                raise BenchError(f"{path}: run {r.id!r}: its {k} {dep!r} is neither a run of this manifest nor "
                                 "recorded (name the id of the run that trains it)")
    try:
        tuple(graphlib.TopologicalSorter({r.id: r.deps() for r in runs}).static_order())
    except graphlib.CycleError as e:
        raise BenchError(f"{path}: dependency cycle: {' -> '.join(e.args[1])}") from None
    device = raw.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        raise BenchError(f"{path}: device must be cpu or cuda; got {device!r}")
    return Manifest(path, raw.get("name", path.stem), device, runs, raw.get("data", {}))


# ---------------------------------------------------------------- state
class RecordIndex:
    """The results folder's records (``records.load_records``), read once per task and read again
    only for a task whose run just finished."""

    def __init__(self, results_dir: Path):
        self.dir, self._by_task = Path(results_dir), {}

    def of(self, task: str) -> list[dict]:
        from .records import load_records
        if task not in self._by_task:
            self._by_task[task] = load_records(self.dir, task)
        return self._by_task[task]

    def forget(self, task: str) -> None:
        self._by_task.pop(task, None)


def find_record(m: Manifest, run: Run, index: RecordIndex) -> Path | None:
    for rec in index.of(run.task):
        tag = rec.get("campaign") or {}
        if tag.get("manifest") == m.name and tag.get("run") == run.id and tag.get("spec") == m.spec(run):
            return index.dir / rec["_file"]
    return None


def work_dir(m: Manifest, run: Run) -> Path:
    """Per spec: a changed run never resumes a checkpoint of its old spec."""
    return m.work_root / m.name / f"{run.id}-{m.spec(run)}"


def checkpoint(m: Manifest, run: Run) -> Path | None:
    last = work_dir(m, run) / "last_checkpoint"
    if not last.is_file():
        return None
    ckpt = Path(last.read_text().strip())
    return ckpt if ckpt.is_file() else None


def estimate_s(run: Run, device: str, index: RecordIndex) -> tuple[float | None, str | None]:
    """(seconds, where from): the median wall time of recorded runs of the same task, backbone,
    schedule and kind of device, scaled by epochs ("measured"); else the manifest's est_s ("manifest").
    A recorded run counts only at the same width and compile setting, when the run sets them: both
    change the time several-fold."""
    import tasks
    sched_epochs = tasks.get(run.task).SCHEDULES[run.schedule].get("epochs")
    want = run.epochs or sched_epochs
    seen = []
    for rec in index.of(run.task):
        if (rec.get("backbone"), rec.get("schedule")) != (run.backbone, run.schedule):
            continue
        if not str(rec.get("device", "")).startswith(device) or not rec.get("wall_s") or not rec.get("epochs"):
            continue
        ident = rec.get("identity") or {}
        if "width" in run.options and ident.get("width") != float(run.options["width"]):
            continue
        if bool(run.options.get("compile")) != bool((ident.get("options") or {}).get("compile")):
            continue
        seen.append(rec["wall_s"] * (want / rec["epochs"] if want else 1.0))
    if seen:
        return sorted(seen)[len(seen) // 2], "measured"
    return run.est_s, "manifest" if run.est_s else None


# ---------------------------------------------------------------- running
def _command(m: Manifest, run: Run, device: str, results_dir: Path, smoke: bool, resume: bool) -> list[str]:
    schedule = _smoke_schedule(run) if smoke else run.schedule
    args = ["run", "--task", run.task, "--backbone", run.backbone, "--schedule", schedule, "--seed", str(run.seed),
            "--device", device, "--work-dir", _here(work_dir(m, run)), "--results-dir", _here(results_dir)]
    data = m.data_of(run).get("path")
    if data and not smoke:
        args += ["--data", data]  # relative to the repository, where the runs start
    for flag, v in (("--recipe", run.recipe), ("--variant", run.variant),
                    ("--epochs", None if smoke else run.epochs)):
        if v is not None:
            args += [flag, str(v)]
    carried = [d["path"] for d in m.data.values() if d.get("path")]
    for k, v in run.options.items():
        if smoke and any(c in str(v) for c in carried):
            continue  # names carried data: smoke runs on the embedded samples
        args += [f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v)]
    for flag, dep in (("--teacher", run.teacher), ("--init-from", run.init_from)):
        if dep:
            args += [flag, _here(checkpoint(m, m.run(dep)))]
    if resume:
        args.append("--resume")
    if run.launcher == "pytorch":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "-m", "bench.cli", *args,
                "--launcher", "pytorch"]
    return [sys.executable, "-m", "bench.cli", *args]


def _smoke_schedule(run: Run) -> str:
    """smoke, or pretrain-smoke for a pretraining run (its checkpoint must fit --init-from's stem)."""
    import tasks
    if run.schedule.startswith("pretrain") and "pretrain-smoke" in tasks.get(run.task).SCHEDULES:
        return "pretrain-smoke"
    return "smoke"


def _here(path: Path) -> str:
    """A path as the runs are given it: relative to the repository (their working directory) when
    inside it, so that no record names this machine's folders."""
    path = Path(path).resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def parse_until(text: str, now: dt.datetime) -> dt.datetime:
    """HH:MM (today, local time) or an ISO date-time."""
    try:
        if len(text) <= 5 and ":" in text:
            h, mi = (int(x) for x in text.split(":"))
            return now.replace(hour=h, minute=mi, second=0, microsecond=0)
        t = dt.datetime.fromisoformat(text)
        return t if t.tzinfo is None else t.astimezone().replace(tzinfo=None)
    except ValueError:
        raise BenchError(f"--until expects HH:MM or an ISO date-time; got {text!r}") from None


def _order(m: Manifest) -> list[str]:
    """Manifest order, each run after the runs it needs (the manifest is checked acyclic)."""
    order, left = [], list(m.runs)
    while left:
        nxt = next(r for r in left if all(d in order for d in r.deps()))
        order.append(nxt.id)
        left.remove(nxt)
    return order


def plan(m: Manifest, results_dir: Path, sessions=None, device=None, smoke=False, index=None) -> list[dict]:
    """One row per run of the chosen sessions, in dependency order: its state and estimate."""
    index = index or RecordIndex(results_dir)
    order = _order(m)
    rows = []
    for rid in order:
        run = m.run(rid)
        if sessions and run.session not in sessions:
            continue
        rec = find_record(m, run, index)
        state = ("recorded" if rec else "resumable" if checkpoint(m, run) else "pending")
        est, source = (None, None) if smoke else estimate_s(run, device or m.device, index)
        rows.append(dict(id=rid, session=run.session, state=state, est_s=est, est_from=source, deps=run.deps(),
                         record=rec, note=""))
    # a checkpoint stays on the machine that trained it: a recorded run whose checkpoint a run to go
    # needs, and that is not here, trains again first (dependents come later in the order)
    by_id = {r["id"]: r for r in rows}
    for r in reversed(rows):
        if r["state"] in ("pending", "resumable"):
            for d in r["deps"]:
                if d in by_id and by_id[d]["state"] == "recorded" and checkpoint(m, m.run(d)) is None:
                    by_id[d].update(state="pending", note=f"recorded, trains again: {r['id']} needs its checkpoint")
    return rows


def makespan(rows, parallel: int) -> float:
    """Seconds until the last of ``rows`` ends when they run as `execute` starts them: in order,
    ``parallel`` at once, each after the runs it needs (a run without an estimate counts 0). The
    estimates were measured with runs sharing the device, so this does not divide them again."""
    end, slots, t = {}, [0.0] * parallel, 0.0
    ids = {r["id"] for r in rows}
    for r in rows:
        slot = min(range(parallel), key=slots.__getitem__)
        t = max([slots[slot]] + [end[d] for d in r["deps"] if d in ids])
        end[r["id"]] = slots[slot] = t + (r["est_s"] or 0.0)
    return max(end.values(), default=0.0)


def format_plan(rows, parallel: int = 1, budget_s: float | None = None) -> str:
    lines = [f"{'run':36s} {'session':>7s} {'state':>10s} {'estimate':>9s} {'from':>9s}  needs"]
    for r in rows:
        est = f"{r['est_s'] / 60:.1f} min" if r["est_s"] else "unknown"
        lines.append(f"{r['id']:36s} {r['session']:7d} {r['state']:>10s} {est:>9s} {r['est_from'] or '':>9s}  "
                     f"{', '.join(r['deps']) or '-'}" + (f"  ({r['note']})" if r["note"] else ""))
    todo = [r for r in rows if r["state"] != "recorded"]
    for s in sorted({r["session"] for r in todo}):
        known = [r["est_s"] for r in todo if r["session"] == s and r["est_s"]]
        unknown = sum(r["session"] == s and not r["est_s"] for r in todo)
        line = (f"session {s}: {sum(r['session'] == s for r in todo)} runs to go, {sum(known) / 60:.1f} min in "
                f"series by the estimates ({unknown} without one)")
        if budget_s:
            need = makespan([r for r in todo if r["session"] == s], parallel)
            verdict = "fits" if need <= budget_s and not unknown else "does NOT fit" if need > budget_s else "may fit"
            line += (f"; {verdict} one {budget_s / 60:.1f}-min call: {need / 60:.1f} min at --parallel {parallel} "
                     "by the estimates, in dependency order")
        lines.append(line)
    return "\n".join(lines)


def execute(m: Manifest, results_dir: Path, deadline: float, parallel: int = 1, sessions=None, device=None,
            smoke=False, env=None, echo=print) -> list[dict]:
    """Run what has no record, in dependency order, ``parallel`` at once, until ``deadline`` (epoch s).
    Returns one summary row per run of the chosen sessions."""
    device = "cpu" if smoke else (device or m.device)
    index = RecordIndex(results_dir)
    rows = {r["id"]: r for r in plan(m, results_dir, sessions, device, smoke, index)}
    done = {rid for rid, r in rows.items() if r["state"] == "recorded"}
    for r in m.runs:  # a dependency outside the chosen sessions counts if it is recorded
        if r.id not in rows and find_record(m, r, index):
            done.add(r.id)
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    logs = m.work_root / m.name
    logs.mkdir(parents=True, exist_ok=True)
    try:
        return _loop(m, rows, done, running, logs, index, deadline, parallel, device, smoke, env, echo)
    finally:  # interrupted (Ctrl-C, SIGTERM): no run outlives the campaign; each resumes next time
        for proc, _, log in running.values():
            _stop(proc)
            log.close()


def _loop(m, rows, done, running, logs, index, deadline, parallel, device, smoke, env, echo):
    while True:
        now = time.time()
        for rid, (proc, limit, log) in list(running.items()):
            if proc.poll() is None and now < limit:
                continue
            record = None
            if proc.poll() == 0:  # its task's records changed: read them again
                index.forget(m.run(rid).task)
                record = find_record(m, m.run(rid), index)
            if proc.poll() is None:
                _stop(proc)
                rows[rid].update(state="stopped", note="stopped at the deadline or its limit; resumes next time "
                                 "from its last checkpoint if that is here")
            elif record:
                rows[rid].update(state="recorded", record=record)
                rate = json.loads(record.read_text()).get("train_samples_per_s")
                rows[rid]["note"] = f"{rate:.3g} training samples/s end to end" if rate else ""
                done.add(rid)
            else:
                lines = [ln.strip() for ln in Path(log.name).read_text(errors="replace").splitlines() if ln.strip()]
                why = next((ln for ln in reversed(lines) if ln.startswith("bench: error")), lines[-1] if lines else "")
                rows[rid].update(state="failed", note=f"exit {proc.returncode}: {why[:200]}")
            log.close()
            rows[rid]["wall_s"] = time.time() - rows[rid].pop("t0")
            echo(f"[{time.strftime('%H:%M:%S')}] {rid}: {rows[rid]['state']} after {rows[rid]['wall_s']:.0f} s "
                 f"{rows[rid]['note']}".rstrip())
            del running[rid]
        blocked = {rid for rid, r in rows.items() if r["state"] in ("failed", "stopped", "skipped")}
        for rid, r in rows.items():  # a run whose dependency failed cannot run this time
            if r["state"] in ("pending", "resumable"):
                bad = [d for d in m.run(rid).deps() if d in blocked or (d not in rows and d not in done)]
                if bad:
                    r.update(state="skipped", note=f"needs {', '.join(bad)}, which "
                             + ("did not finish" if all(d in rows for d in bad) else "is neither recorded here "
                                "nor in the chosen sessions"))
                    echo(f"{rid}: skipped ({r['note']})")
        ready = [rid for rid, r in rows.items() if r["state"] in ("pending", "resumable")
                 and all(d in done for d in m.run(rid).deps())]
        left = deadline - time.time() - MARGIN_S
        for rid in ready:
            if len(running) >= parallel:
                break
            r, run = rows[rid], m.run(rid)
            if left < 60:
                continue  # too near the deadline to get anywhere: left for the next call
            missing = [d for d in run.deps() if checkpoint(m, m.run(d)) is None]
            if missing:
                r.update(state="skipped", note=f"the checkpoint of {', '.join(missing)} is not on this machine "
                         "(recorded elsewhere; rerun it here first)")
                echo(f"{rid}: skipped ({r['note']})")
                continue
            cmd = _command(m, run, device, index.dir, smoke, resume=r["state"] == "resumable")
            log = open(logs / f"{rid}.log", "a")
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            tag = json.dumps({"manifest": m.name, "run": rid, "spec": m.spec(run), "session": run.session})
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=dict(env or os.environ, BENCH_CAMPAIGN=tag, PYTHONUNBUFFERED="1"))
            limit = min(deadline - MARGIN_S, time.time() + run.limit_s if run.limit_s else float("inf"))
            running[rid] = (proc, limit, log)
            r["t0"] = time.time()
            echo(f"[{time.strftime('%H:%M:%S')}] {rid}: started ({r['state']}; estimate "
                 f"{r['est_s'] / 60:.1f} min)" if r["est_s"] else f"[{time.strftime('%H:%M:%S')}] {rid}: started")
            r["state"] = "running"
        if not running:
            for rid, r in rows.items():
                if r["state"] in ("pending", "resumable"):
                    r["note"] = "not started: the deadline is too near for it"
            return list(rows.values())
        time.sleep(1.0)


def pack(m: Manifest, rows, results_dir: Path, archive: Path, since: float) -> Path:
    """One archive of the records written since ``since``, the runs' logs and the summary."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(results_dir.rglob("*")):
            if p.is_file() and p.stat().st_mtime >= since:
                tar.add(p, arcname=str(Path("results") / p.relative_to(results_dir)))
        for log in sorted((m.work_root / m.name).glob("*.log")):
            tar.add(log, arcname=f"logs/{log.name}")
        summary = archive.with_suffix(".summary.json")
        summary.write_text(json.dumps([{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()}
                                       for r in rows], indent=1))
        tar.add(summary, arcname="summary.json")
    return archive


def install_wheels(wheels: Path, target: Path = Path("/tmp/bench-site")) -> dict:
    """Carried wheels (scripts/fetch_device_wheels.sh) installed for the runs' processes; returns their env."""
    found = sorted(Path(wheels).glob("*.whl"))
    if not found:
        raise BenchError(f"{wheels}: no .whl files (fetch them here with scripts/fetch_device_wheels.sh)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, found)], check=True)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO)]))


def data_files(src: Path, exclude=(), per_class=None) -> list[Path]:
    """The files of a data folder that travel: all but the ``exclude`` globs; with ``per_class``
    ({"train": N, "test": M}) an ImageFolder's first N / M images per class by name, the same
    images a schedule's per_class_train / per_class_test takes from the whole folder."""
    from fnmatch import fnmatch  # "val/*" leaves out all of val/, subfolders too
    files = [f for f in sorted(src.rglob("*")) if f.is_file()
             and not any(fnmatch(f.relative_to(src).as_posix(), g) for g in exclude)]
    if per_class:
        kept, seen = [], {}
        for f in files:
            rel = f.relative_to(src).parts
            if len(rel) == 3 and rel[0] in per_class:
                n = seen[rel[:2]] = seen.get(rel[:2], 0) + 1
                if n > per_class[rel[0]]:
                    continue
            kept.append(f)
        files = kept
    return files


def pack_folder(src: Path, archive: Path, files=None) -> None:
    """A folder as one file for the trip to the device: a zlib'd JSON index (relative path, size),
    then the files' bytes. Zip's per-file headers cost 7 MB over CIFAR-10's 60k JPEGs, which the
    device tool's 64 MiB limit cannot spare."""
    import zlib
    files = data_files(src) if files is None else files
    index = zlib.compress(json.dumps([[f.relative_to(src).as_posix(), f.stat().st_size] for f in files]).encode())
    from backbones.files import AtomicFile
    with AtomicFile(archive) as out:
        out.write(len(index).to_bytes(8, "little") + index)
        for f in files:
            out.write(f.read_bytes())


def unpack_folder(archive: Path, dst: Path) -> None:
    import zlib
    with open(archive, "rb") as fh:
        index = json.loads(zlib.decompress(fh.read(int.from_bytes(fh.read(8), "little"))))
        tmp = dst.with_name(dst.name + ".part")
        for rel, size in index:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(fh.read(size))
    tmp.replace(dst)


def _session_data(m: Manifest, sessions) -> dict:
    """The data entries the chosen sessions use: a run's own, and any whose path an option names."""
    runs = [r for r in m.runs if not sessions or r.session in sessions]
    names = {r.data or r.task for r in runs}
    opts = " ".join(str(v) for r in runs for v in r.options.values())
    return {n: d for n, d in m.data.items() if n in names or (d.get("path") and d["path"] in opts)}


def unpack_data(m: Manifest, sessions=None) -> None:
    """Each data folder the chosen sessions use, made from its carried archive where it is missing."""
    for name, d in _session_data(m, sessions).items():
        path, archive = REPO / d.get("path", ""), d.get("archive")
        if d.get("path") and not path.exists() and archive and (REPO / archive).is_file():
            unpack_folder(REPO / archive, path)


def prepare(m: Manifest, sessions=None) -> list[str]:
    """Here, before a device call: the data archives the chosen sessions use, made from their source
    folders, and the wheels; prints what the call carries against the tool's limit. Returns the
    paths to carry."""
    chosen = {r.task for r in m.runs if not sessions or r.session in sessions}
    # only what the runs import: the wheels count against the carry too
    wheels = next(w for w, tasks in (("classification", {"classification"}),
                                     ("segmentation", {"classification", "segmentation"}), ("all", None))
                  if tasks is None or chosen <= tasks)
    carry = [f".whl/{wheels}"]
    for name, d in _session_data(m, sessions).items():
        src, archive = d.get("source"), d.get("archive")
        if not (src and archive):
            continue
        src, archive = (REPO / src).resolve(), REPO / archive
        carry.append(archive.relative_to(REPO).as_posix())
        if archive.is_file():
            print(f"{name}: {carry[-1]} is there")
            continue
        if not src.is_dir():
            raise BenchError(f"{m.path}: data source of [data.{name}] not found: {src}")
        archive.parent.mkdir(parents=True, exist_ok=True)
        pack_folder(src, archive, data_files(src, d.get("exclude", ()), d.get("per_class")))
        print(f"{name}: wrote {carry[-1]} ({archive.stat().st_size / 2**20:.1f} MiB)")
    subprocess.run(["bash", str(REPO / "scripts" / "fetch_device_wheels.sh"), wheels], check=True,
                   stdout=subprocess.DEVNULL)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True).stdout
    size = sum((REPO / f).stat().st_size for f in tracked.split("\0") if f and (REPO / f).is_file())
    size += sum(f.stat().st_size for c in carry for f in ([REPO / c] if (REPO / c).is_file()
                                                            else (REPO / c).rglob("*")) if f.is_file())
    print(f"carry: {' '.join(carry)}; with the tracked tree {size / 2**20:.1f} MiB of the device tool's "
          f"{CARRY_LIMIT / 2**20:.0f} MiB" + ("  ** OVER: split the session or carry less **"
                                                if size > CARRY_LIMIT else ""))
    return carry
