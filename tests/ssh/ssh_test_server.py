"""A tiny SSH server on 127.0.0.1 for the ssh target's connection errors.

paramiko's server side, one thread per connection: public-key login for one
user and key, ``exec`` requests answered with a fixed exit status and
stderr text (enough to play a guest without python3), and SFTP onto a local
directory standing in for the guest's root.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import paramiko


class _Server(paramiko.ServerInterface):
    def __init__(self, owner: SshTestServer):
        self.owner = owner
        self.event = threading.Event()

    def check_auth_publickey(self, username, key):
        ok = username == self.owner.user and key == self.owner.client_key
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        def answer():
            time.sleep(0.2)  # after the server's reply to the exec request
            status, err = self.owner.exec_answer
            if err:
                channel.sendall_stderr(err.encode())
            channel.send_exit_status(status)
            channel.close()
        threading.Thread(target=answer, daemon=True).start()
        return True


class _Handle(paramiko.SFTPHandle):
    def stat(self):
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))


class _Sftp(paramiko.SFTPServerInterface):
    """SFTP onto a local directory standing in for the guest's /."""

    def __init__(self, server, *args, root: str, **kwargs):
        super().__init__(server, *args, **kwargs)
        self.root = root

    def _local(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def mkdir(self, path, attr):
        os.makedirs(self._local(path))
        return paramiko.SFTP_OK

    def rmdir(self, path):
        os.rmdir(self._local(path))
        return paramiko.SFTP_OK

    def remove(self, path):
        os.remove(self._local(path))
        return paramiko.SFTP_OK

    def open(self, path, flags, attr):
        fd = os.open(self._local(path), flags, 0o644)
        f = os.fdopen(fd, "wb" if flags & (os.O_WRONLY | os.O_RDWR) else "rb")
        handle = _Handle(flags)
        handle.filename = path
        handle.readfile = handle.writefile = f
        return handle

    def list_folder(self, path):
        local = self._local(path)
        return [paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(local, n)), n)
                for n in os.listdir(local)]

    def stat(self, path):
        return paramiko.SFTPAttributes.from_stat(os.stat(self._local(path)))

    lstat = stat


class SshTestServer:
    def __init__(self, user: str = "root", root: str | None = None):
        self.user = user
        self.host_key = paramiko.RSAKey.generate(2048)
        self.client_key = paramiko.RSAKey.generate(2048)
        self.exec_answer = (127, "bash: line 1: python3: command not found\n")
        self.root = root or tempfile.mkdtemp(prefix="ssh-test-root-")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _Sftp, root=self.root)
            self._transports.append(t)
            try:
                t.start_server(server=_Server(self))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def close(self) -> None:
        self.sock.close()
        for t in self._transports:
            t.close()
