"""supervisord's socket credentials: a secret made once per installation, never committed.

supervisord logs CRIT when its control socket has no authentication. The rendered config
includes ``FLEET_VAR_DIR/supervisorctl.conf``, which this module writes (mode 0600) with a
random password the first time: supervisord takes the credentials from its
``[unix_http_server]`` section, and the same file is supervisorctl's config
(``supervisorctl -c var/supervisorctl.conf status``), so only the owner can control the fleet.
The file is kept across runs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

CTL_FILE = "supervisorctl.conf"
SOCKET_FILE = "supervisor.sock"
USERNAME = "fleet"


def ctl_path(var_dir: Path) -> Path:
    return var_dir / CTL_FILE


def ensure_auth(var_dir: Path) -> Path:
    """Write the credentials file under ``var_dir`` unless it exists; return its path."""
    path = ctl_path(var_dir)
    var_dir.mkdir(parents=True, exist_ok=True)
    credentials = f"username={USERNAME}\npassword={secrets.token_urlsafe(24)}\n"
    body = (
        "; supervisord's socket credentials, made by `fleet supervisor-auth`; keep private.\n"
        f"[unix_http_server]\n{credentials}\n"
        f"[supervisorctl]\nserverurl=unix://{var_dir.resolve() / SOCKET_FILE}\n{credentials}"
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as out:
        out.write(body)
    return path
