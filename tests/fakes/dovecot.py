"""A real Dovecot IMAP server for tests, configured in a temporary directory.

Needs Debian's ``dovecot-imapd`` (``make test`` installs it). The server listens on 127.0.0.1 on a
free port, authenticates users from a passwd-file in the temp dir, keeps mail as Maildir there,
and runs without SSL. It never reads ``/etc/dovecot`` and starts no system service: it is
``dovecot -F -c CONF`` as a child process, stopped by its PID.

When the tests run as root, Dovecot's own processes drop to its ``dovecot``/``dovenull`` users
and mail is accessed as the ``dovecot`` user (Dovecot refuses mail access as UID 0).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_uid = {mail_uid}
mail_gid = {mail_gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


def available() -> bool:
    """True when a ``dovecot`` binary is installed."""
    return Path(DOVECOT).is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError("dovecot did not start listening")


@dataclass
class Dovecot:
    """A running Dovecot: where to reach it and who may log in.

    Attributes:
        host: ``127.0.0.1``.
        port: the IMAP port (plain, no TLS).
        user: the mailbox login.
        password: its password.
        root: the temp directory holding config, state, logs and Maildirs.
        pid: the master process id.
    """

    host: str
    port: int
    user: str
    password: str
    root: Path
    pid: int

    @property
    def imap_url(self) -> str:
        """``imap://user:password@host:port`` for ``SWITCHBOARD_EMAIL_IMAP_URL``."""
        return f"imap://{self.user}:{self.password}@{self.host}:{self.port}"

    def maildir(self) -> Path:
        """The user's Maildir (``cur``/``new``/``tmp`` and Dovecot's index files)."""
        return self.root / "mail" / self.user

    def reset_mailbox(self) -> None:
        """Delete the user's mailbox so the next SELECT makes a new one (new UIDVALIDITY)."""
        shutil.rmtree(self.maildir(), ignore_errors=True)


@contextlib.contextmanager
def run_dovecot(
    user: str = "support", password: str = "secret", timeout_s: float = 10.0
) -> Iterator[Dovecot]:
    """Start a Dovecot on 127.0.0.1 (free port) in a temp dir; stop and delete it afterwards.

    Raises:
        RuntimeError: when Dovecot exits or does not listen within ``timeout_s`` seconds.
    """
    root = Path(tempfile.mkdtemp(prefix="switchboard-dovecot-"))
    os.chmod(root, 0o755)  # Dovecot's unprivileged processes must traverse it
    port = _free_port()
    if os.geteuid() == 0:
        mail = pwd.getpwnam("dovecot")
        internal, login = "dovecot", "dovenull"
        group = "dovecot"
        mail_uid, mail_gid = mail.pw_uid, mail.pw_gid
    else:
        me = pwd.getpwuid(os.geteuid())
        internal = login = group = me.pw_name
        mail_uid, mail_gid = me.pw_uid, me.pw_gid
    (root / "mail").mkdir()
    os.chown(root / "mail", mail_uid, mail_gid)
    (root / "passwd").write_text(f"{user}:{{PLAIN}}{password}::::::\n")
    conf = root / "dovecot.conf"
    conf.write_text(
        CONF.format(
            root=root,
            port=port,
            internal_user=internal,
            internal_group=group,
            login_user=login,
            mail_uid=mail_uid,
            mail_gid=mail_gid,
        )
    )
    log = root / "dovecot.log"
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc, log, timeout_s)
        yield Dovecot("127.0.0.1", port, user, password, root, proc.pid)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5.0)
        shutil.rmtree(root, ignore_errors=True)
