"""One-shot set-up steps of the docker-compose stack, run by ``airflow-init`` (as root).

``ssh-key``: the key pair the Airflow workers use to log in to the demo VMs. It is made at the
first ``docker compose up``, in volumes, not at image build: no private key ever sits in an
image layer, and each installation has its own. The private key goes where only the Airflow
containers mount it; the public key, as an ``authorized_keys`` file, where the demo VMs do.
The key itself is never printed, only its path and fingerprint.

``ui-password``: the passwords file of Airflow's simple auth manager, so the UI login is the
user and password the compose file names (``airflow`` / ``airflow`` unless ``.env`` says
otherwise) instead of a random one printed in a log. The password is read from the
environment, never from the command line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte (no umask window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def fingerprint(public_line: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key line."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def ensure_ssh_key(private: Path, public: Path, comment: str) -> str:
    """Make an Ed25519 key pair unless ``private`` exists; (re)write ``public`` from it.

    :param private: the private key (OpenSSH format, mode 0600); kept when it exists
    :param public: the public key as an ``authorized_keys`` line (mode 0644)
    :param comment: the comment of the public key line
    :return: the key's fingerprint
    """
    if private.exists():
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SystemExit(f"{private} is not an Ed25519 key; move it away to make a new one")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        _write_new(private, pem, 0o600)
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_new(public, line + b" " + comment.encode() + b"\n", 0o644)
    return fingerprint(line)


def write_ui_password(path: Path, user: str, password: str) -> None:
    """The simple auth manager's passwords file: ``{user: password}``, mode 0600."""
    if not user or not password:
        raise SystemExit("ui-password: the user name and the password must not be empty")
    _write_new(path, (json.dumps({user: password}) + "\n").encode(), 0o600)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``ssh-key`` or ``ui-password`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="compose_setup.py", description=__doc__)
    sub = parser.add_subparsers(dest="step", required=True)
    key = sub.add_parser("ssh-key", help="make the demo VMs' SSH key pair if missing")
    key.add_argument("--private", type=Path, required=True)
    key.add_argument("--public", type=Path, required=True)
    key.add_argument("--comment", default="airflow-provider-skytap-compose")
    ui = sub.add_parser("ui-password", help="write the simple auth manager's passwords file")
    ui.add_argument("--file", type=Path, required=True)
    ui.add_argument("--user", required=True)
    ui.add_argument(
        "--password-env",
        default="_AIRFLOW_WWW_USER_PASSWORD",
        help="the environment variable holding the password",
    )
    args = parser.parse_args(argv)
    if args.step == "ssh-key":
        fp = ensure_ssh_key(args.private, args.public, args.comment)
        print(f"SSH key for the demo VMs: {args.private} ({fp}), public key in {args.public}")
    else:
        write_ui_password(args.file, args.user, os.environ.get(args.password_env, ""))
        print(f"UI login for user {args.user!r} written to {args.file}")


if __name__ == "__main__":
    main(sys.argv[1:])
