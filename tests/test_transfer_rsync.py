"""The rsync backend's locations, routing, confinement and settings, where no other host is needed.
(Moving files between hosts with a real sshd: tests/test_rsync_bed.py.)"""

import pytest

from balsam.errors import BalsamError
from balsam.site.settings import TransferSettings
from balsam.transfer import Item, Location, TransferError, backend_for, task_key
from balsam.transfer.confine import remote_inside
from balsam.transfer.rsync import RsyncBackend, SshOptions


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("ssh://login1/home/me/data/x", Location("ssh", "login1", "/home/me/data/x")),
        ("ssh://me@login1.example.org:2222/d/x", Location("ssh", "me@login1.example.org:2222", "/d/x")),
        ("ssh://me%40c2%3A22/d", Location("ssh", "me@c2:22", "/d")),  # as .uri once wrote it quoted
        ("ssh://10.0.0.5/a//b/./c", Location("ssh", "10.0.0.5", "/a/b/c")),
    ],
)
def test_ssh_locations(uri, expected):
    assert Location.parse(uri) == expected
    assert Location.parse(expected.uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ssh:///only/a/path", "needs a host name"),
        ("ssh://-oProxyCommand=touch%20x/a", "needs a host name"),  # nothing that ssh could read as an option
        ("ssh://-l@host/a", "needs a host name"),
        ("ssh://host;rm/a", "needs a host name"),
        ("ssh://host:port/a", "needs a host name"),
        ("ssh://host/../etc/passwd", "must not contain '..'"),
        ("ssh://host/a?x=1", "no query"),
    ],
)
def test_bad_ssh_locations(uri, message):
    with pytest.raises(TransferError, match=message):
        Location.parse(uri)


def test_ssh_to_file_and_back_is_rsync_one_route_per_host():
    remote, here = Location.parse("ssh://c2/data/x"), Location.local("/site/data/x")
    assert backend_for(remote, here) == backend_for(here, remote) == "rsync"
    assert task_key(Item(remote, here)) == ("rsync", "c2", "")
    assert task_key(Item(here, remote)) == ("rsync", "", "c2")
    with pytest.raises(TransferError, match="not between two other hosts"):
        backend_for(remote, Location.parse("ssh://c3/x"))
    with pytest.raises(TransferError, match="between ssh:// and file://"):
        backend_for(remote, Location.parse("globus://abc/x"))


def test_the_other_hosts_end_must_be_inside_a_root_at_the_same_host():
    roots = [Location.parse("ssh://c2/home/me/alpha/data"), Location.parse("ssh://me@c3:2222/scratch")]
    for uri in ("ssh://c2/home/me/alpha/data", "ssh://c2/home/me/alpha/data/w/1/out.txt", "ssh://me@c3:2222/scratch/x"):
        assert remote_inside(Location.parse(uri), roots) == Location.parse(uri)
    for uri in ("ssh://c2/home/me/alpha/database", "ssh://c2/home/me/alpha", "ssh://c3/scratch/x", "ssh://c9/home/me/alpha/data/x"):
        with pytest.raises(TransferError, match="outside the folders on other hosts this site may read from"):
            remote_inside(Location.parse(uri), roots, "stage-in source", "read from")
    with pytest.raises(TransferError, match="none: set transfer.ssh_roots"):
        remote_inside(Location.parse("ssh://c2/x"), [])


def test_the_backend_needs_its_key_files_and_refuses_what_it_cannot_move(tmp_path):
    with pytest.raises(TransferError, match="needs transfer.ssh_identity"):
        RsyncBackend(SshOptions("", str(tmp_path / "known_hosts")), [])
    with pytest.raises(TransferError, match="transfer.ssh_known_hosts names .* which is not a file"):
        RsyncBackend(SshOptions(__file__, str(tmp_path / "nowhere")), [])
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(TransferError, match="transfer.ssh_roots: 'file:///x' is not an ssh://"):
        RsyncBackend(SshOptions(__file__, str(tmp_path / "known_hosts")), ["file:///x"])
    backend = RsyncBackend(SshOptions(__file__, str(tmp_path / "known_hosts")), ["ssh://c2/data"])
    try:
        with pytest.raises(TransferError, match="between ssh:// and file://"):
            backend.submit([Item(Location.local("/a"), Location.local("/b"))], label="x")
        with pytest.raises(TransferError, match="stage-out destination ssh://c2/etc/cron.d/x is outside"):
            backend.submit([Item(Location.local("/a"), Location.parse("ssh://c2/etc/cron.d/x"))], label="x")
        with pytest.raises(TransferError, match="at least one item"):
            backend.submit([], label="x")
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ssh_host", "-oProxyCommand=x", "must be \\[USER@\\]HOST\\[:PORT\\]"),
        ("ssh_identity", "id_ed25519", "must be an absolute path"),
        ("ssh_known_hosts", 3, "must be an absolute path"),
        ("ssh_roots", ["/data"], "must be a list of ssh://HOST/abs/path"),
        ("ssh_connect_timeout_s", 0, "must be a positive number"),
    ],
)
def test_bad_ssh_settings_are_named(field, value, message):
    settings = TransferSettings(**{field: value})
    with pytest.raises(BalsamError, match=f"transfer.{field} {message}"):
        settings.check()
