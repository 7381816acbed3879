"""The ssh target's keys and its one-line errors (no guest needed)."""

from __future__ import annotations

import os
import socket

import pytest
from ssh_test_server import SshTestServer

from conformance.targets import TargetConfigError, TargetError, spec_from_mapping
from conformance.targets.ssh.config import ssh_spec_from_mapping
from conformance.targets.ssh.session import open_session
from conformance.targets.ssh.target import SshTarget

W = "t.yaml"


def spec(**kw):
    return ssh_spec_from_mapping(kw, W)


def test_defaults():
    s = spec(host="guest", serial="DUT1")
    assert (s.port, s.user, s.sudo, s.accept_new_host_key, s.python, s.pci) == (
        22, "root", False, False, "python3", None)
    assert s.selector == "serial 'DUT1'"


@pytest.mark.parametrize("keys,message", [
    ({"serial": "X"}, f"{W}: host: missing (the guest's host name or address)"),
    ({"host": "h"}, f"{W}: pci: give pci (PCI address) or serial (virtio-blk serial) of the "
                    "device under test; the agent touches no device it was not told to use"),
    ({"host": "h", "pci": "00:0a"}, f"{W}: pci: expected a PCI address like 0000:00:0a.0, "
                                    "got '00:0a'"),
    ({"host": "h", "serial": "X", "port": 70000},
     f"{W}: port: expected a port number up to 65535, got 70000"),
    ({"host": "h", "serial": "X", "sudo": "yes"}, f"{W}: sudo: expected true or false, got 'yes'"),
    ({"host": "h", "serial": "X", "key_file": "/nonexistent/key"},
     f"{W}: key_file: no such file: /nonexistent/key"),
    ({"host": "h", "serial": "X", "hostname": "h"}, None),
])
def test_bad_keys_are_one_line(keys, message):
    with pytest.raises(TargetConfigError) as info:
        spec(**keys)
    text = str(info.value)
    assert "\n" not in text
    if message is None:
        assert text.startswith(f"{W}: hostname: unknown key (known keys: ")
    else:
        assert text == message


def test_kind_is_registered():
    s = spec_from_mapping({"kind": "ssh", "host": "h", "serial": "X"}, W, "t")
    assert s.kind == "ssh"
    assert isinstance(SshTarget.from_spec(s), SshTarget)  # connects lazily


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host():
    port = closed_port()
    with pytest.raises(TargetError) as info:
        open_session(spec(host="127.0.0.1", port=port, serial="X", connect_timeout=3), 5)
    assert str(info.value).startswith(f"ssh 127.0.0.1:{port}: host unreachable: ")


@pytest.fixture(scope="module")
def server():
    s = SshTestServer()
    yield s
    s.close()


@pytest.fixture
def key_file(server, tmp_path):
    path = tmp_path / "id_rsa"
    server.client_key.write_private_key_file(str(path))
    return str(path)


def test_unknown_host_key_is_refused_by_default(server, key_file, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    s = spec(host="127.0.0.1", port=server.port, serial="X", key_file=key_file,
             known_hosts=str(empty))
    with pytest.raises(TargetError) as info:
        open_session(s, 5)
    assert str(info.value) == (
        f"ssh 127.0.0.1:{server.port}: unknown host key (not in {empty}); add it, or set "
        "accept_new_host_key: true for a throwaway test VM")


def test_changed_host_key_is_refused(server, key_file, tmp_path):
    import paramiko

    other = paramiko.RSAKey.generate(1024)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{server.port} ssh-rsa {other.get_base64()}\n")
    s = spec(host="127.0.0.1", port=server.port, serial="X", key_file=key_file,
             known_hosts=str(kh))
    with pytest.raises(TargetError, match="the host key .* does not match the one in"):
        open_session(s, 5)


def test_authentication_failure(server, tmp_path):
    import paramiko

    wrong = tmp_path / "wrong"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(wrong))
    kh = tmp_path / "known_hosts"
    kh.write_text(server.known_hosts_line())
    s = spec(host="127.0.0.1", port=server.port, serial="X", key_file=str(wrong),
             known_hosts=str(kh))
    with pytest.raises(TargetError) as info:
        open_session(s, 5)
    assert str(info.value) == (f"ssh 127.0.0.1:{server.port}: authentication failed for user "
                               f"root with {wrong}")


def test_no_python_in_the_guest(server, key_file, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(server.known_hosts_line())
    server.exec_answer = (127, "bash: line 1: python3: command not found\n")
    s = spec(host="127.0.0.1", port=server.port, serial="X", key_file=key_file,
             known_hosts=str(kh))
    with pytest.raises(TargetError) as info:
        open_session(s, 5)
    assert str(info.value) == (f"ssh 127.0.0.1:{server.port}: no python3 in the guest "
                               "(bash: line 1: python3: command not found); the agent needs "
                               "python3")
    # The uploaded agent was removed again.
    assert os.listdir(os.path.join(server.root, "tmp")) == []
