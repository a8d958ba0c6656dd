# Sourced by run.sh and test.sh: create .venv on first use and install the project.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # torch first and pinned: on this machine pip takes the CPU build from local disk.
    "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$root[test,report]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
