#!/usr/bin/env bash
# Create the project's virtual environment on a machine that has only Python 3, git and make.
# Uses uv when it is on PATH, the standard venv module otherwise; as root, installs Debian's
# python3-venv when the venv module is missing. Usage: scripts/bootstrap.sh VENV_DIR PYTHON
set -euo pipefail
venv=${1:-.venv}
python=${2:-python3}

if [ -x "$venv/bin/python" ]; then exit 0; fi
if command -v uv >/dev/null 2>&1; then
  exec uv venv --seed --python "$python" "$venv"
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: the venv module is missing; installing python3-venv with apt" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "bootstrap: $python has no venv module; install python3-venv (as root) and retry" >&2
    exit 1
  fi
fi
"$python" -m venv "$venv"
