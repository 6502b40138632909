"""Location URIs and the choice of backend."""

import pytest

from balsam.transfer import Item, Location, TransferError, backend_for, task_key

UUID = "6c54cade-bde5-45c1-bdea-f4bd71dba2cc"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///data/run1/out.h5", Location("file", "", "/data/run1/out.h5")),
        ("file://localhost/data/x", Location("file", "", "/data/x")),
        ("file:///data//a/./b/", Location("file", "", "/data/a/b")),
        (f"globus://{UUID}/~/x", Location("globus", UUID, "/~/x")),
        (f"globus://{UUID}/project/in.dat", Location("globus", UUID, "/project/in.dat")),
        ("globus://user%23ep1/p", Location("globus", "user#ep1", "/p")),  # legacy name, "#" quoted
        ("file:///with%20space/%C3%A9t%C3%A9", Location("file", "", "/with space/été")),
    ],
)
def test_parse_good(uri, expected):
    assert Location.parse(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/data/x", "unknown scheme '\\(none\\)'"),
        ("s3://bucket/x", "unknown scheme 's3'"),
        ("file://data/x", "names no host"),
        ("file:relative/x", "absolute"),
        ("file:///data/../etc/passwd", "must not contain '..'"),
        ("file:///data/x?version=2", "no query"),
        ("file:///data/x#frag", "no query"),
        ("file:///data/\x01x", "control characters"),
        ("file:///data/x\n", "control characters"),
        ("globus:///path/only", "needs a collection id"),
        ("globus://bad id/x", "needs a collection id"),
        ("globus://user#ep1/p", "fragment"),  # the raw "#" starts a fragment: quote it as %23
        ("", "must be a URI"),
    ],
)
def test_parse_bad(uri, message):
    with pytest.raises(TransferError, match=message):
        Location.parse(uri)


@pytest.mark.parametrize("path", ["/a b/c d.txt", "/données/été/文件.dat", "/x/%41/#?/semi;colon", "/"])
def test_uri_round_trip(path):
    for loc in (Location.local(path), Location("globus", UUID, path), Location("globus", "user#ep", path)):
        assert Location.parse(loc.uri) == loc
        assert " " not in loc.uri


def test_local_needs_absolute():
    with pytest.raises(TransferError, match="absolute"):
        Location.local("rel/path")


def test_backend_for():
    f1, f2 = Location.local("/a"), Location.local("/b")
    g1, g2 = Location.parse(f"globus://{UUID}/a"), Location.parse("globus://other/b")
    assert backend_for(f1, f2) == "local"
    assert backend_for(g1, g2) == "globus"
    for src, dst in ((f1, g1), (g1, f1)):
        with pytest.raises(TransferError, match="file:// to file:// .* globus:// to globus://"):
            backend_for(src, dst)
    assert task_key(Item(g1, g2)) == ("globus", UUID, "other")
    assert task_key(Item(f1, f2)) == ("local", "", "")
