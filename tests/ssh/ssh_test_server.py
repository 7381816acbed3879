"""A tiny SSH server on 127.0.0.1 for the ssh target's connection errors.

paramiko's server side, one thread per connection: public-key login for one
user and key, and ``exec`` requests answered with a fixed exit status and
stderr text (enough to play a guest without python3).
"""

from __future__ import annotations

import socket
import threading

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
            status, err = self.owner.exec_answer
            if err:
                channel.sendall_stderr(err.encode())
            channel.send_exit_status(status)
            channel.close()
        threading.Thread(target=answer, daemon=True).start()
        return True


class SshTestServer:
    def __init__(self, user: str = "root"):
        self.user = user
        self.host_key = paramiko.RSAKey.generate(2048)
        self.client_key = paramiko.RSAKey.generate(2048)
        self.exec_answer = (127, "bash: line 1: python3: command not found\n")
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
