"""The one writer (features.outputs): links never followed, existing files kept without force, nothing left
behind by a failed write, names from data that fit and stay in their folder."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.errors import InputError
from features.outputs import (NAME_MAX, OutputError, Outputs, check_folder, data_name, data_names, output_path,
                              write_json, write_output)

ROOT = Path(__file__).resolve().parents[1]


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_text_bytes_and_through_a_function(tmp_path):
    write_output(tmp_path / "a.txt", "é\n")
    write_output(tmp_path / "b.bin", b"\x00\x01")
    write_output(tmp_path / "c.csv", lambda f: f.write(b"x,y\n"))
    write_output(tmp_path / "d.csv", lambda f: f.write("1,2\r\n"), text=True)
    write_json(tmp_path / "sub" / "e.json", {"k": 3})
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.csv").read_bytes() == b"x,y\n"
    assert (tmp_path / "d.csv").read_bytes() == b"1,2\r\n"          # text mode translates nothing
    assert (tmp_path / "sub" / "e.json").read_text() == '{\n  "k": 3\n}\n'
    assert _left(tmp_path) == ["a.txt", "b.bin", "c.csv", "d.csv", "sub"]


def test_existing_file_kept_without_force_replaced_with_it(tmp_path):
    p = tmp_path / "out.csv"
    p.write_text("mine")
    with pytest.raises(InputError, match="output exists"):
        write_output(p, "new")
    assert p.read_text() == "mine" and _left(tmp_path) == ["out.csv"]
    write_output(p, "new", force=True)
    assert p.read_text() == "new" and _left(tmp_path) == ["out.csv"]


@pytest.mark.parametrize("force", [False, True])
def test_symlink_target_untouched(tmp_path, force):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.png"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "nowhere.txt")
    for p in (link, dangling):
        with pytest.raises(InputError, match="symbolic link"):
            write_output(p, b"PNG", force=force)
    assert victim.read_text() == "precious" and link.is_symlink() and not (tmp_path / "nowhere.txt").exists()
    assert _left(tmp_path) == ["dangling.png", "out.png", "victim.txt"]


def test_link_folder_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "plots").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="symbolic link"):
        check_folder(tmp_path / "plots")
    check_folder(tmp_path / "new")
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="found a file"):
        check_folder(tmp_path / "f")


def test_failure_mid_write_leaves_nothing(tmp_path):
    def half(f):
        f.write(b"half a table")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError) as ei:
        write_output(tmp_path / "t.csv", half)
    assert str(ei.value) == f"could not write {tmp_path / 't.csv'}: No space left on device"
    assert ei.value.errno == errno.ENOSPC and isinstance(ei.value, OSError)
    with pytest.raises(ZeroDivisionError):                       # not an OSError: passes unchanged
        write_output(tmp_path / "u.csv", lambda f: f.write(b"x") and 1 / 0)
    assert _left(tmp_path) == []
    # an existing file survives a failed replacement
    (tmp_path / "t.csv").write_text("old")
    with pytest.raises(OutputError):
        write_output(tmp_path / "t.csv", half, force=True)
    assert _left(tmp_path) == ["t.csv"] and (tmp_path / "t.csv").read_text() == "old"


def test_one_failing_output_writes_none_of_the_command(tmp_path):
    with pytest.raises(OutputError):
        with Outputs([tmp_path / "a.csv", tmp_path / "b.png"]) as outs:
            outs.write(tmp_path / "a.csv", "table")
            outs.write(tmp_path / "b.png", lambda f: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    assert _left(tmp_path) == []


def test_every_output_checked_before_any_is_written(tmp_path):
    (tmp_path / "b.png").write_text("mine")
    with pytest.raises(InputError, match="b.png: output exists"):
        Outputs([tmp_path / "a.csv", tmp_path / "b.png"])
    with pytest.raises(InputError, match="two outputs"):
        Outputs([tmp_path / "c.csv", tmp_path / "." / "c.csv"])
    assert _left(tmp_path) == ["b.png"]


def test_name_taken_while_writing_is_not_replaced(tmp_path):
    p = tmp_path / "o.txt"
    with pytest.raises(InputError, match="made while this command ran"):
        with Outputs([p]) as outs:
            outs.write(p, "new")
            p.write_text("someone else's")
    assert p.read_text() == "someone else's" and _left(tmp_path) == ["o.txt"]


def test_planted_link_at_a_temporary_name_is_not_followed(tmp_path, monkeypatch):
    """The temporary name is random and created with O_EXCL: a link planted under a guessed name is skipped."""
    import features.outputs as fo
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".o.txt.00000000.part").symlink_to(victim)
    tokens = iter(["00000000", "11111111"])
    monkeypatch.setattr(fo.secrets, "token_hex", lambda n: next(tokens))
    write_output(tmp_path / "o.txt", "new")
    assert victim.read_text() == "precious" and (tmp_path / "o.txt").read_text() == "new"


def test_path_writer_for_libraries_that_open_the_path(tmp_path):
    with output_path(tmp_path / "m.keras") as p:
        assert p.name == "m.keras" and p.parent != tmp_path
        p.write_bytes(b"model")
    assert (tmp_path / "m.keras").read_bytes() == b"model"
    with pytest.raises(OutputError, match="no regular file"):
        with output_path(tmp_path / "n.keras"):
            pass
    with pytest.raises(RuntimeError):
        with output_path(tmp_path / "o.keras") as p:
            p.write_bytes(b"half")
            raise RuntimeError("boom")
    assert _left(tmp_path) == ["m.keras"]


def test_data_names_fit_stay_in_the_folder_and_stay_distinct():
    assert data_name("clip 1", ".png", "p.") == "p.clip_1.png"
    assert data_name("../../etc/passwd", ".png") == "_.._.._etc_passwd.png"
    assert data_name("..") == "_.." and data_name("") == "_" and data_name(".hidden", ".png") == "_.hidden.png"
    long = "v" * 250
    n = data_name(long, ".png", "p.")
    assert len(n.encode()) <= NAME_MAX and n.startswith("p.vvvv") and n.endswith(".png") and "~" in n
    assert data_name(long + "x", ".png", "p.") != n                      # the hash keeps them apart
    wide = "é" * 200                                                     # 400 UTF-8 bytes in 200 characters
    n = data_name(wide, ".png")
    assert len(n.encode()) <= NAME_MAX and n.startswith("éé")
    assert "/" not in data_name("a/b") and "\0" not in data_name("a\0b")
    a, b, c = data_names(["a b", "a_b", "c"], ".png")
    assert len({a, b, c}) == 3 and c == "c.png" and a.startswith("a_b~")


def test_too_long_or_odd_names_refused_before_writing(tmp_path):
    with pytest.raises(InputError, match="more than the 255"):
        write_output(tmp_path / ("x" * 256), "y")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_output(tmp_path / "d", "y", force=True)
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="folder of this output is a file"):
        write_output(tmp_path / "f" / "o.txt", "y")


def test_file_too_large_mid_write_names_the_file(tmp_path):
    """A real failure of the file system (a file size limit, as a full disk fails a write): no temporary file
    stays, and the one line names the output and keeps the reason."""
    code = ("import resource, signal, sys\n"
            "from features.outputs import write_output\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
            "try:\n"
            "    write_output(sys.argv[1], b'x' * 5000)\n"
            "except OSError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.bin")], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.strip() == f"could not write {tmp_path / 'big.bin'}: File too large", r.stderr
    assert _left(tmp_path) == []
