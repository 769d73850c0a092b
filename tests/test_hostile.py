"""A hostile-input suite for the dense tasks, driven through the CLI as a user would: every case ends
in one `bench: error:` line naming what is wrong (exit 2) and writes no record, or in a correct result.
Any traceback fails the suite. (Classification and detection cases: test_runner, test_reliability.)"""
import shutil
from pathlib import Path

import pytest
from bench.cli import main

REPO = Path(__file__).resolve().parent.parent


def _first_image(root: Path, pattern: str) -> Path:
    return sorted(p for p in root.rglob(pattern) if p.is_file())[0]


def _bomb(path: Path):
    """A valid PNG header claiming 20000x20000 pixels (400 Mpx): decoding it would take GBs."""
    import struct
    import zlib
    raw = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    path.write_bytes(raw + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _damage(root: Path, kind: str, pattern: str) -> Path:
    target = _first_image(root, pattern)
    if kind == "zero-byte":
        target.write_bytes(b"")
    elif kind == "not-an-image":
        target.write_bytes(b"<html>404 not found</html>")
    elif kind == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    elif kind == "bomb":
        _bomb(target)
    elif kind == "directory":
        target.unlink()
        target.mkdir()
    return target


#: task -> (embedded sample, glob of the images a user's copy may damage, extra run flags)
TASKS = {
    "segmentation": ("camvid-sample", "test/images/*", ["--model", "fpn", "--width", "0.25"]),
    "super_resolution": ("sr-sample", "Set5/*.png", ["--width", "0.25"]),
    "matching": ("hpatches-sample", "*/1.png", ["--width", "0.25"]),
}
KINDS = ["zero-byte", "not-an-image", "truncated", "bomb", "directory"]


def _run(tmp_path, task, root, *extra):
    return main(["run", "--task", task, "--data", str(root), "--schedule", "smoke", "--backbone", "fp32",
                 "--work-dir", str(tmp_path / "wd"), "--results-dir", str(tmp_path / "res"), *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("bench: error:"), err[-5:]
    return err[-1]


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_image(tmp_path, capsys, task, kind):
    sample, pattern, extra = TASKS[task]
    root = tmp_path / "data"
    shutil.copytree(REPO / "data" / sample, root)
    target = _damage(root, kind, pattern)
    assert _run(tmp_path, task, root, *extra) == 2
    line = _one_error_line(capsys)
    assert target.name in line, line
    assert not list(tmp_path.glob("res/**/*.json"))


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("flags,msg", [
    (["--width", "0"], "--width"), (["--width", "nan"], "--width"), (["--width", "-1"], "--width"),
    (["--width", "inf"], "--width"), (["--data", "/nonexistent/data"], "/nonexistent/data"),
])
def test_bad_values(tmp_path, capsys, task, flags, msg):
    sample = REPO / "data" / TASKS[task][0]
    argv = ["run", "--task", task, "--backbone", "fp32", "--data", str(sample), "--results-dir", str(tmp_path / "res"),
            "--work-dir", str(tmp_path / "wd"), *flags]
    try:
        rc = main(argv)
    except SystemExit as e:  # refused by the parser: argparse's own one-line usage error
        rc = e.code
    assert rc == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "res").exists() and not (tmp_path / "wd").exists()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_empty_folder_and_file_instead_of_folder(tmp_path, capsys, task):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    for root in (tmp_path / "empty", tmp_path / "afile"):
        assert _run(tmp_path, task, root) == 2
        assert str(root) in _one_error_line(capsys)
    assert not (tmp_path / "res").exists()
