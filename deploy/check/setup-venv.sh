#!/usr/bin/env bash
# Creates (or refreshes) the venv of the deploy checks in target/deploy-venv
# with the pinned packages of requirements.txt. Idempotent and quick when
# nothing changed. Needs python3 with the venv module (Debian:
# python3-venv, which .ci/run installs when missing).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/deploy-venv"
req="$root/deploy/check/requirements.txt"
stamp="$venv/.requirements"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
echo "deploy-check: creating $venv"
rm -rf "$venv"
if ! "$python" -m venv "$venv"; then
  echo "deploy-check: '$python -m venv' failed; on Debian: apt-get install python3-venv" >&2
  exit 1
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
cp "$req" "$stamp"
