"""The ssh target's keys, checked one by one with one-line errors.

::

    kind: ssh
    host: 192.0.2.10          # required
    port: 22
    user: root
    key_file: ~/.ssh/id_ed25519   # default: the user's keys / agent
    known_hosts: ~/.ssh/known_hosts
    accept_new_host_key: false    # true only for throwaway test VMs
    sudo: false                   # run the agent with sudo -n (user not root)
    pci: "0000:00:0a.0"           # the device: PCI address and/or
    serial: DUT123                #   virtio-blk serial (at least one)
    connect_timeout: 10
    python: python3               # the guest's interpreter
    hugepages: 16                 # hugetlb pages the agent maps at most
    agent_idle_timeout: 300       # the agent gives the device back after this silence
    backing_file: /path/on/host   # the DUT's backing file, if the host can read it
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.targets.keys import Keys

_BDF = re.compile(r"^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")

KEYS = {
    "host": "host name or address of the guest",
    "port": "SSH port",
    "user": "user to log in as",
    "key_file": "private key file",
    "known_hosts": "known_hosts file to check the host key against",
    "accept_new_host_key": "accept an unknown host key (throwaway VMs only)",
    "sudo": "run the agent through sudo -n",
    "pci": "PCI address of the device under test",
    "serial": "virtio-blk serial of the device under test",
    "connect_timeout": "seconds to wait for the SSH connection",
    "python": "python3 interpreter in the guest",
    "hugepages": "hugetlb pages the agent maps",
    "agent_idle_timeout": "seconds of silence after which the agent gives the device back",
    "backing_file": "the device's backing file as the host sees it",
}


@dataclass(frozen=True)
class SshSpec:
    host: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    sudo: bool = False
    pci: str | None = None
    serial: str | None = None
    connect_timeout: float = 10.0
    python: str = "python3"
    hugepages: int = 16
    agent_idle_timeout: float = 300.0
    backing_file: str | None = None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def selector(self) -> str:
        parts = [f"pci {self.pci}" if self.pci else "", f"serial {self.serial!r}"
                 if self.serial else ""]
        return " and ".join(x for x in parts if x)


def ssh_spec_from_mapping(m: Mapping[str, Any], where: str, *,
                          extra_keys: tuple[str, ...] = ()) -> SshSpec:
    keys = Keys(m, where, KEYS)
    keys.check_known(extra_keys)
    fail, string, number = keys.fail, keys.string, keys.number

    def path(key: str) -> str | None:
        v = string(key, None)
        return os.path.expanduser(v) if v else None

    host = string("host", None)
    if host is None:
        raise fail("host", "missing (the guest's host name or address)")
    pci = string("pci", None)
    serial = m.get("serial")
    if serial is not None and (not isinstance(serial, str | int) or isinstance(serial, bool)
                               or not str(serial)):
        raise fail("serial", f"expected the device's serial string, got {serial!r}")
    serial = str(serial) if serial is not None else None
    if pci is None and serial is None:
        raise fail("pci", "give pci (PCI address) or serial (virtio-blk serial) of the device "
                          "under test; the agent touches no device it was not told to use")
    if pci is not None and not _BDF.match(pci):
        raise fail("pci", f"expected a PCI address like 0000:00:0a.0, got {pci!r}")
    key_file = path("key_file")
    if key_file is not None and not os.path.isfile(key_file):
        raise fail("key_file", f"no such file: {key_file}")
    known_hosts = path("known_hosts")
    if known_hosts is not None and not os.path.isfile(known_hosts):
        raise fail("known_hosts", f"no such file: {known_hosts}")
    backing = path("backing_file")
    if backing is not None and not os.path.isfile(backing):
        raise fail("backing_file", f"no such file: {backing}")
    port = number("port", 22, 1, integer=True)
    if port > 65535:
        raise fail("port", f"expected a port number up to 65535, got {port}")
    return SshSpec(
        host=host, port=int(port), user=string("user", "root"), key_file=key_file,
        known_hosts=known_hosts, accept_new_host_key=keys.flag("accept_new_host_key"),
        sudo=keys.flag("sudo"), pci=pci, serial=serial,
        connect_timeout=float(number("connect_timeout", 10.0, 0.1)),
        python=string("python", "python3"),
        hugepages=int(number("hugepages", 16, 1, integer=True)),
        agent_idle_timeout=float(number("agent_idle_timeout", 300.0, 1)),
        backing_file=backing,
    )
