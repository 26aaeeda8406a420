"""The development `.env` that `make run` writes on a checkout's first run.

With it, every `manage.py` command works on the embedded defaults, not only those started by
`make run`: generated keys instead of the fixed debug ones, DEBUG on, and EAGLE_CLOUD_URL at the
local simulator, so that `check_user` never reaches the real Rainforest cloud by accident. An
existing `.env` is never changed. `python -m rainlog.local_env --help` shows the options.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# The key DEBUG runs encrypted EAGLE passwords with before a .env existed (rainlog/settings.py):
# kept as a second, decrypt-only key when such a run left data behind.
DEBUG_FIELD_ENCRYPTION_KEY = "ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcHJvZC11c2U="


def fernet_key() -> str:
    """A new Fernet key: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def local_env(simulator_port: int, keep_debug_key: bool) -> str:
    keys = [fernet_key(), *([DEBUG_FIELD_ENCRYPTION_KEY] if keep_debug_key else [])]
    return (
        "# Written by `make run` for this development checkout (git-ignored). Not for production:\n"
        "# see .env.example. Delete it to have a new one written on the next `make run`.\n"
        "DEBUG=1\n"
        f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
        f"FIELD_ENCRYPTION_KEYS={','.join(keys)}\n"
        f"EAGLE_CLOUD_URL=http://127.0.0.1:{simulator_port}/cgi-bin/post_manager\n"
    )


def write_local_env(path: Path, simulator_port: int, var_dir: Path) -> bool:
    """Write the development .env at `path` unless one exists; True if it was written."""
    if path.exists():
        return False
    text = local_env(simulator_port, keep_debug_key=(var_dir / "rainlog.sqlite3").exists())
    # The keys are secrets: readable by the owner only, from the first byte on.
    with open(path, "x", encoding="utf-8", opener=_private) as out:
        out.write(text)
    return True


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulator-port", type=int, default=8765)
    parser.add_argument("--path", type=Path, default=BASE_DIR / ".env")
    parser.add_argument("--var-dir", type=Path, default=BASE_DIR / "var")
    options = parser.parse_args(argv)
    if write_local_env(options.path, options.simulator_port, options.var_dir):
        print(f"Wrote {options.path} with generated keys for development (DEBUG=1).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
