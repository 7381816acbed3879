"""An SSH session to the guest with the agent running in it.

:func:`open_session` logs in (strict host-key checking unless the target
file says the host is a throwaway VM), uploads the agent modules over SFTP
into a fresh directory, starts ``python3 -m guest_agent.agent`` on a channel
and selects the device.  Every way this can go wrong ends in one
:class:`TargetError` line that names the host and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shlex
import socket
import stat
from dataclasses import dataclass, field
from typing import Any

import paramiko

from conformance.targets.base import TargetError
from guest_agent import agent_files
from guest_agent import protocol as p

from .client import AgentClient, AgentLost, AgentRequestError
from .config import SshSpec
from .streams import ChannelStream

AGENT_START_TIMEOUT = 60.0  # python3 starting from a 9p root under TCG takes seconds
EXIT_NOT_FOUND = 127

#: What an agent refusal means for the user, by error code.
HINTS = {
    "not-root": "log in as root or set sudo: true",
    "no-hugepages": "boot the guest with hugepages=16 on the kernel command line",
    "not-found": "check pci/serial in the target file",
    "in-use": "the agent never touches a disk the guest is using",
    "refused": "the agent touches only the device it was told to use",
    "ambiguous": "add pci to the target file",
}


@dataclass
class Session:
    ssh: paramiko.SSHClient
    stream: ChannelStream
    client: AgentClient
    remote_dir: str
    sftp: paramiko.SFTPClient | None = None
    selected: dict[str, Any] = field(default_factory=dict)

    def close(self, give_back: bool = True) -> str:
        """Ask the agent to give the device back, then remove its files; return its note."""
        note = ""
        if give_back and not self.client.lost:
            with contextlib.suppress(AgentLost, AgentRequestError):
                note = self.client.control(p.BYE, what="giving the device back").get("note", "")
                self.stream.exit_status(5.0)  # it exits right after answering
        self.stream.close()
        if self.sftp is not None:
            with contextlib.suppress(Exception):
                remove_agent(self.sftp, self.remote_dir)
            with contextlib.suppress(Exception):
                self.sftp.close()
        with contextlib.suppress(Exception):
            self.ssh.close()
        return note


def connect(spec: SshSpec) -> paramiko.SSHClient:
    """Log in; one-line TargetError for unreachable host, unknown key, failed login."""
    # paramiko logs handshake failures itself; the TargetError below says it once.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    ssh = paramiko.SSHClient()
    where = f"{spec.host}:{spec.port}"
    if spec.known_hosts:
        ssh.load_host_keys(spec.known_hosts)
    else:
        with contextlib.suppress(OSError):
            ssh.load_system_host_keys()
    ssh.set_missing_host_key_policy(
        paramiko.AutoAddPolicy() if spec.accept_new_host_key else paramiko.RejectPolicy())
    pkey = None
    if spec.key_file:
        try:
            pkey = paramiko.PKey.from_path(spec.key_file)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise TargetError(f"ssh {where}: cannot load the key {spec.key_file}: {exc}") \
                from None
    try:
        ssh.connect(spec.host, spec.port, username=spec.user, pkey=pkey,
                    timeout=spec.connect_timeout, banner_timeout=spec.connect_timeout,
                    auth_timeout=spec.connect_timeout, look_for_keys=pkey is None,
                    allow_agent=pkey is None)
    except paramiko.BadHostKeyException as exc:
        raise TargetError(f"ssh {where}: the host key ({exc.key.get_name()}) does not match "
                          f"the one in {spec.known_hosts or 'known_hosts'}: refusing to "
                          "connect") from None
    except paramiko.AuthenticationException:
        key = spec.key_file or "the default keys"
        raise TargetError(f"ssh {where}: authentication failed for user {spec.user} with "
                          f"{key}") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise TargetError(
                f"ssh {where}: unknown host key (not in {spec.known_hosts or 'known_hosts'}); "
                "add it, or set accept_new_host_key: true for a throwaway test VM") from None
        raise TargetError(f"ssh {where}: SSH handshake failed: {exc}") from None
    except socket.gaierror as exc:
        raise TargetError(f"ssh {where}: cannot resolve host {spec.host}: {exc.strerror}") \
            from None
    except (TimeoutError, OSError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise TargetError(f"ssh {where}: host unreachable: {why}") from None
    transport = ssh.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
        # Small request/reply frames: do not let Nagle hold the host's side back.
        with contextlib.suppress(OSError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ssh


def upload_agent(ssh: paramiko.SSHClient, where: str) -> tuple[paramiko.SFTPClient, str]:
    """Copy the agent into a fresh directory over SFTP; return the SFTP client and directory.

    Everything goes through SFTP (no shell): each exec session in a TCG guest
    costs a login shell, seconds with a heavy ~/.bashrc.
    """
    try:
        sftp = ssh.open_sftp()
    except paramiko.SSHException as exc:
        raise TargetError(f"ssh {where}: SFTP is not available in the guest ({exc}); the agent "
                          "is uploaded over SFTP") from None
    remote = f"/tmp/vblk-agent.{secrets.token_hex(6)}"
    try:
        sftp.mkdir(remote, 0o700)
        sftp.mkdir(f"{remote}/guest_agent", 0o700)
        for name, data in agent_files():
            with sftp.open(f"{remote}/guest_agent/{name}", "wb") as f:
                f.write(data)
    except OSError as exc:
        sftp.close()
        raise TargetError(f"ssh {where}: uploading the agent to {remote} in the guest failed: "
                          f"{exc}") from None
    return sftp, remote


def remove_agent(sftp: paramiko.SFTPClient, remote: str) -> None:
    """Remove the uploaded agent (its files, __pycache__ and directories)."""
    def rm_tree(path: str) -> None:
        for entry in sftp.listdir_attr(path):
            child = f"{path}/{entry.filename}"
            if stat.S_ISDIR(entry.st_mode or 0):
                rm_tree(child)
            else:
                sftp.remove(child)
        sftp.rmdir(path)

    rm_tree(remote)


def start_agent(ssh: paramiko.SSHClient, spec: SshSpec, remote: str,
                timeout: float) -> tuple[ChannelStream, AgentClient]:
    where = f"{spec.host}:{spec.port}"
    sudo = "sudo -n " if spec.sudo else ""
    command = (f"cd {shlex.quote(remote)} && exec {sudo}{shlex.quote(spec.python)} -s -m "
               f"guest_agent.agent --idle-timeout {spec.agent_idle_timeout:g} "
               f"--hugepages {spec.hugepages}")
    try:
        channel = ssh.get_transport().open_session()
        channel.exec_command(command)
    except paramiko.SSHException as exc:
        raise TargetError(f"ssh {where}: cannot run the agent in the guest: {exc}") from None
    stream = ChannelStream(channel)
    client = AgentClient(stream, timeout)
    try:
        client.start(AGENT_START_TIMEOUT)
    except AgentLost as exc:
        status = stream.exit_status()
        tail = stream.stderr_tail().strip().splitlines()
        last = tail[-1] if tail else ""
        stream.close()
        if status == EXIT_NOT_FOUND:
            raise TargetError(f"ssh {where}: no {spec.python} in the guest "
                              f"({last or 'command not found'}); the agent needs python3") \
                from None
        if spec.sudo and "password" in last:
            raise TargetError(f"ssh {where}: sudo asks for a password; allow {spec.user} "
                              "passwordless sudo or log in as root") from None
        raise TargetError(f"ssh {where}: the agent did not start: {last or exc}") from None
    return stream, client


def open_session(spec: SshSpec, timeout: float) -> Session:
    """Log in, start the agent, select and take the device."""
    where = f"{spec.host}:{spec.port}"
    ssh = connect(spec)
    try:
        sftp, remote = upload_agent(ssh, where)
    except BaseException:
        ssh.close()
        raise
    try:
        stream, client = start_agent(ssh, spec, remote, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_agent(sftp, remote)
        sftp.close()
        ssh.close()
        raise
    session = Session(ssh, stream, client, remote, sftp)
    try:
        session.selected = client.control(
            p.SELECT, {"pci": spec.pci, "serial": spec.serial}, timeout=max(timeout, 60.0),
            what="selecting the device")
    except AgentRequestError as exc:
        session.close(give_back=False)
        hint = HINTS.get(exc.code)
        raise TargetError(f"ssh {where}: device {spec.selector}: {exc}"
                          + (f" ({hint})" if hint else "")) from None
    except AgentLost as exc:
        session.close(give_back=False)
        raise TargetError(f"ssh {where}: the agent stopped while selecting the device: {exc}") \
            from None
    return session
