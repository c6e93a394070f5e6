"""The one CSV-manifest reader (evaluation.manifest) and the leaderboard's manifest on top of it."""

from __future__ import annotations

import pytest

from evaluation.leaderboard import read_manifest
from evaluation.manifest import ManifestRow, read_csv_manifest
from fmuia.errors import FmuiaError


class OwnError(FmuiaError):
    pass


def test_rows_cells_and_paths(tmp_path):
    m = tmp_path / "sub" / "m.csv"
    m.parent.mkdir()
    m.write_text("\ufeff Name , Results ,extra\n\na, x/r.json ,1\nb,/abs/r.json\n\"c,d\",../up.json,\n",
                 encoding="utf-8")
    rows = read_csv_manifest(m, ("name", "results"), path_columns=("results",))
    assert [r.line for r in rows] == [3, 4, 5]  # blank lines count
    assert [r["name"] for r in rows] == ["a", "b", "c,d"]
    assert rows[0]["extra"] == "1" and rows[1]["extra"] == "" and rows[1]["nope"] == ""
    assert rows[0].paths["results"] == tmp_path / "sub" / "x" / "r.json"
    assert rows[1].paths["results"].as_posix() == "/abs/r.json"
    assert rows[2].paths["results"] == tmp_path / "up.json"  # normalised, absolute


def test_comments_only_when_asked(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("# a comment\nname,image\n  # another\nx,y\n")
    rows = read_csv_manifest(m, ("name", ("image", "tar")), comments=True)
    assert [(r.line, r["name"]) for r in rows] == [(4, "x")]
    with pytest.raises(FmuiaError, match="missing"):
        read_csv_manifest(m, ("name", ("image", "tar")))  # the comment is the header then


def test_every_bad_row_is_one_problem(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("name,value\nok,1\n,2\nok,3\nbad,\nfine,4\n")

    def check(row: ManifestRow) -> str | None:
        return None if row["name"] and row["value"] else "empty cell"

    with pytest.raises(OwnError) as ei:
        read_csv_manifest(m, ("name", "value"), check=check, unique="name", where="line {}", error=OwnError)
    assert "3 problem(s)" in ei.value.message
    got = [(p.file, p.where, p.message) for p in ei.value.problems]
    assert got == [(str(m), "line 3", "empty cell"), (str(m), "line 4", "duplicate name 'ok'"),
                   (str(m), "line 5", "empty cell")]


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty manifest .*`name,image,tar`"),
        (b"\n  \n", "empty manifest"),
        (b"name,source\nx,y\n", "got \\['name', 'source'\\]"),
        (b"name,image\n\xff\xfe,x\n", "not valid UTF-8"),
    ],
)
def test_file_level_errors(tmp_path, content, match):
    m = tmp_path / "m.csv"
    m.write_bytes(content)
    with pytest.raises(OwnError, match=match):
        read_csv_manifest(m, ("name", ("image", "tar")), error=OwnError,
                          header_message="need name and image/tar, got {header}")


def test_unreadable(tmp_path):
    with pytest.raises(FmuiaError, match="manifest not found"):
        read_csv_manifest(tmp_path / "nope.csv", ("name",))
    with pytest.raises(FmuiaError, match="cannot read the manifest"):
        read_csv_manifest(tmp_path, ("name",))


def test_leaderboard_manifest(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("name,results\na,a/results.json\nb,/x/results.json\n")
    got = read_manifest(m)
    assert list(got) == ["a", "b"]
    assert got["a"] == tmp_path / "a" / "results.json" and got["b"].as_posix() == "/x/results.json"
    m.write_text("name,results\na,\n,b.json\nc,c.json\nc,d.json\n")
    with pytest.raises(FmuiaError) as ei:
        read_manifest(m)
    assert [(p.where, p.message) for p in ei.value.problems] == [
        ("2", "empty name or results"), ("3", "empty name or results"), ("5", "duplicate name 'c'")]
    m.write_text("name,path\na,b\n")
    with pytest.raises(FmuiaError, match="needs the columns name,results; missing \\['results'\\]"):
        read_manifest(m)
