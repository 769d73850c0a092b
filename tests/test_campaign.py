"""`bench campaign`: manifest checks, dependency order, failures isolated, records as state, deadline."""
import json
import tarfile
from pathlib import Path

import pytest

from bench import campaign
from bench.cli import main

RUN = 'task = "classification"\nschedule = "smoke"\n'


def _manifest(tmp_path, body, name="t"):
    p = tmp_path / f"{name}.toml"
    p.write_text(f'name = "{name}"\ndevice = "cpu"\n' + body)
    return p


def _camp(tmp_path, manifest, *args):
    return main(["campaign", str(manifest), "--results-dir", str(tmp_path / "res"),
                 "--work-root", str(tmp_path / "wd"), *args])


@pytest.mark.parametrize("body, said", [
    ('[[run]]\nid = "a"\ntask = "nope"\nbackbone = "fp32"\nschedule = "smoke"\n', "unknown task 'nope'"),
    (f'[[run]]\nid = "a"\n{RUN}backbone = "int4"\n', "unknown backbone 'int4'"),
    (f'[[run]]\nid = "a"\n{RUN}backbone = "fp32"\nrecipe = "magic"\n', "unknown recipe 'magic'"),
    ('[[run]]\nid = "a"\ntask = "classification"\nbackbone = "fp32"\nschedule = "forever"\n',
     "has no schedule 'forever'"),
    (f'[[run]]\nid = "a"\n{RUN}backbone = "fp32"\nteacher = "b"\n[[run]]\nid = "b"\n{RUN}backbone = "fp32"\n'
     'teacher = "a"\n', "dependency cycle"),
    (f'[[run]]\nid = "a"\n{RUN}backbone = "int8"\nrecipe = "ptq"\nteacher = "ghost"\n',
     "'ghost' is neither a run of this manifest nor recorded"),
])
def test_bad_manifest_is_one_clear_error(tmp_path, capsys, body, said):
    assert _camp(tmp_path, _manifest(tmp_path, body), "--dry-run") == 2
    err = capsys.readouterr().err
    assert said in err and "t.toml" in err and "Traceback" not in err


def test_deadline_already_past(tmp_path, capsys):
    m = _manifest(tmp_path, f'[[run]]\nid = "a"\n{RUN}backbone = "fp32"\n')
    assert _camp(tmp_path, m, "--until", "2000-01-01T00:00") == 2
    assert "deadline is already past" in capsys.readouterr().err


def test_flow_dependencies_failures_state_and_pack(tmp_path, capsys):
    """fp32, then INT8 by PTQ from it; a run that fails (a bad width) and the run that needs it,
    skipped with a note; a second call finds every record and runs nothing."""
    tiny = "options = { width = 0.25 }\n"
    m = _manifest(tmp_path, (
        f'[[run]]\nid = "fp32"\n{RUN}backbone = "fp32"\n{tiny}'
        f'[[run]]\nid = "ptq"\n{RUN}backbone = "int8"\nrecipe = "ptq"\nteacher = "fp32"\n{tiny}'
        f'[[run]]\nid = "bad"\n{RUN}backbone = "fp32"\nseed = 1\noptions = {{ width = -1.0 }}\n'
        f'[[run]]\nid = "student"\n{RUN}backbone = "binealnet"\nrecipe = "adamw-kd"\nteacher = "bad"\n{tiny}'))
    pack = tmp_path / "out" / "campaign.tar.gz"
    assert _camp(tmp_path, m, "--smoke", "--parallel", "2", "--pack", str(pack)) == 0
    out = capsys.readouterr().out
    summary = {r["id"]: r for r in json.loads(pack.with_suffix(".summary.json").read_text())}
    assert summary["fp32"]["state"] == summary["ptq"]["state"] == "recorded"
    assert summary["bad"]["state"] == "failed" and "--width" in summary["bad"]["note"]
    assert summary["student"]["state"] == "skipped" and "bad" in summary["student"]["note"]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res" / "classification").glob("*.json")]
    tags = {r["campaign"]["run"]: r for r in recs}
    assert set(tags) == {"fp32", "ptq"}
    assert tags["ptq"]["recipe"]["name"] == "ptq" and tags["ptq"]["teacher"]["run"]["backbone"] == "fp32"
    with tarfile.open(pack) as t:
        names = t.getnames()
    assert {"summary.json", "logs/fp32.log", "logs/bad.log"} <= set(names)
    assert sum(n.startswith("results/classification/") and n.endswith(".json") for n in names) == 2
    assert "fp32" in out and "failed" in out
    # the records are the state: nothing left to run but the failed pair
    def plan():
        loaded = campaign.load_manifest(m)
        loaded.work_root = tmp_path / "wd"
        return {r["id"]: r for r in campaign.plan(loaded, tmp_path / "res")}
    rows = plan()
    assert rows["fp32"]["state"] == rows["ptq"]["state"] == "recorded" and rows["bad"]["state"] == "pending"
    # a checkpoint that stayed on another machine: its run trains again before a run that needs it
    import shutil
    shutil.rmtree(tmp_path / "wd" / "t" / [d.name for d in (tmp_path / "wd" / "t").iterdir()
                                           if d.name.startswith("fp32-")][0])
    m.write_text(m.read_text() + f'[[run]]\nid = "qat"\n{RUN}backbone = "int8"\nrecipe = "qat"\nteacher = "fp32"\n{tiny}')
    rows = plan()
    assert rows["fp32"]["state"] == "pending" and "qat needs its checkpoint" in rows["fp32"]["note"]
    assert rows["ptq"]["state"] == "recorded" and rows["qat"]["state"] == "pending"
    # a changed spec is a new run, not the recorded one
    m.write_text(m.read_text().replace('id = "fp32"\n' + RUN, 'id = "fp32"\n' + RUN + "epochs = 2\n"))
    rows = plan()
    assert rows["fp32"]["state"] == rows["ptq"]["state"] == "pending"  # its teacher changed too


def test_deadline_too_near_starts_nothing(tmp_path, capsys):
    m = _manifest(tmp_path, f'[[run]]\nid = "a"\n{RUN}backbone = "fp32"\n')
    assert _camp(tmp_path, m, "--smoke", "--budget-s", "40") == 0
    assert "not started: the deadline is too near" in capsys.readouterr().out
    assert not (tmp_path / "res").exists()


def test_committed_manifest_is_valid_and_ordered(tmp_path):
    """campaigns/gpu.toml names known tasks, schedules, recipes and data, and every run comes after
    the runs it needs; each session's data is declared."""
    m = campaign.load_manifest(campaign.REPO / "campaigns" / "gpu.toml")
    rows = campaign.plan(m, tmp_path)  # an empty results dir: everything to go
    order = [r["id"] for r in rows]
    assert len(order) == len(m.runs) and len(set(order)) == len(order)
    for r in m.runs:
        assert all(order.index(d) < order.index(r.id) for d in r.deps())
        assert m.data_of(r).get("path") or r.task not in ("classification", "detection"), r.id
        assert all(m.run(d).session <= r.session for d in r.deps()), r.id
    assert {r.session for r in m.runs} >= {1, 2, 3}
    # the detection stall check pairs the task's own optimizer with adamw (the default): both named
    stall = [r for r in m.runs if r.task == "detection" and r.schedule == "short"]
    assert sorted({r.recipe for r in stall}) == ["adamw", "task-default"] and len(stall) == 24
    import dataclasses
    cmd = campaign._command(m, dataclasses.replace(stall[0], init_from=None), "cpu", tmp_path, False, False)
    assert cmd[cmd.index("--recipe") + 1] == stall[0].recipe == "task-default"


def test_makespan_follows_slots_and_dependencies():
    rows = [dict(id="t", deps=[], est_s=100), dict(id="a", deps=[], est_s=300),
            dict(id="s", deps=["t"], est_s=50), dict(id="b", deps=[], est_s=None)]
    # two slots: t 0-100, a 0-300; s after t 100-150; b (no estimate) at 150
    assert campaign.makespan(rows, 2) == 300
    assert campaign.makespan(rows, 1) == 450  # in order: 100 + 300 + 50
    rows[2]["est_s"] = 500
    assert campaign.makespan(rows, 2) == 600  # s waits for t, then runs 500 s


def test_estimate_counts_only_records_of_the_same_width_and_compile_setting():
    def rec(width, compile_, wall):
        return dict(backbone="binealnet", schedule="sweep", device="cpu (x)", wall_s=wall, epochs=4,
                    identity=dict(width=width, options={"compile": True} if compile_ else {}))

    class Index:
        def of(self, task):
            return [rec(0.5, False, 100.0), rec(1.0, False, 400.0), rec(1.0, True, 50.0)]

    run = lambda **o: campaign.Run("r", "classification", "binealnet", "sweep", options=o, est_s=9.0)  # noqa: E731
    assert campaign.estimate_s(run(width=1.0), "cpu", Index()) == (400.0, "measured")
    assert campaign.estimate_s(run(width=1.0, compile=True), "cpu", Index()) == (50.0, "measured")
    assert campaign.estimate_s(run(width=2.0), "cpu", Index()) == (9.0, "manifest")  # no record at 2.0
    assert campaign.estimate_s(run(), "cpu", Index()) == (400.0, "measured")  # median of the eager ones
    assert campaign.estimate_s(run(), "cuda", Index()) == (9.0, "manifest")
