# Sourced by the scripts in this folder: makes .venv with squall (editable) and
# its extras, and installs the Debian packages the tests use when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"

_apt_install() {
    # Installs Debian packages only as root; otherwise says what is missing.
    local missing=()
    local pkg bin
    for pair in "$@"; do
        pkg="${pair%%:*}"; bin="${pair##*:}"
        command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages: ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: missing ${missing[*]} (install them; tests that need them are skipped)" >&2
    fi
}

_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    # Reinstalled (which rebuilds the C speedups in place) when the packaging
    # or the C source changes.
    local stamp="$VENV/.squall-$extras-$(cat pyproject.toml setup.py src/squall/*.c | sha1sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"
        touch "$stamp"
    fi
}
