#!/usr/bin/env bash
# The commands of README.md. Each creates .venv (or reuses it) and installs the pinned environment first.
#
#   bash run.sh test  [pytest args]       ruff + the test suite (exactly what CI runs through .ci/run)
#   bash run.sh study [snakemake args]    the whole study: snakemake --cores all (mini scale by default)
#   bash run.sh notebooks [jupyter args]  JupyterLab on analysis/ (installed into .venv on first use)
#
# Environment: PYTHON (interpreter that creates .venv, default python3, >= 3.11), VENV (default .venv),
# RETINANET_SLURM=0|1 (skip / force the SLURM test-cluster setup; default: only as root with apt-get),
# RETINANET_CHROMIUM=0|1 (the same for headless Chromium, which the tests marked chromium need).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

usage() {
    echo "usage: bash run.sh test [pytest args] | bash run.sh study [snakemake args] | bash run.sh notebooks [jupyter args]" >&2
    exit 2
}

# What an install stamp records: the dependency files it was made from.
install_hash() { cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1; }

# Create or reuse the venv; (re)install when requirements.lock or pyproject.toml changed since the last install.
ensure_env() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "error: $PYTHON is older than Python 3.11" >&2; exit 2; }
        echo "== creating $VENV with $("$PYTHON" --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.retinanet-installed" want
    want=$(install_hash)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "== installing requirements.lock and the retinanet package into $VENV (log: $VENV/install.log)"
        if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check -r requirements.lock \
               && "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e .; \
             } >"$VENV/install.log" 2>&1; then
            tail -n 30 "$VENV/install.log" >&2
            echo "error: installing into $VENV failed (full log: $VENV/install.log)" >&2
            exit 1
        fi
        echo "$want" >"$stamp"
    fi
    PATH="$(cd "$VENV/bin" && pwd):$PATH"
    export PATH
}

# JupyterLab for `bash run.sh notebooks`: pyproject.toml's optional dependency group `notebooks`, installed on first
# use into the same venv with requirements.lock as constraints (the pinned packages stay as they are), and again only
# when requirements.lock or pyproject.toml changed (its own stamp).
ensure_notebooks() {
    local stamp="$VENV/.retinanet-notebooks-installed" want reqs
    want=$(install_hash)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "== installing JupyterLab (pyproject.toml's optional group 'notebooks') into $VENV" \
             "(log: $VENV/install-notebooks.log)"
        mapfile -t reqs < <("$VENV/bin/python" -c 'import tomllib
print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["notebooks"], sep="\n")')
        if [ "${#reqs[@]}" = 0 ] || ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
                -c requirements.lock "${reqs[@]}" >"$VENV/install-notebooks.log" 2>&1; then
            tail -n 30 "$VENV/install-notebooks.log" >&2
            echo "error: installing JupyterLab into $VENV failed (full log: $VENV/install-notebooks.log)" >&2
            exit 1
        fi
        echo "$want" >"$stamp"
    fi
}

# Hooks for the tests that need a system service: .ci/setup-<marker>.sh sets it up (apt packages, daemons; root
# only): setup-slurm.sh starts a single-node SLURM cluster, setup-chromium.sh installs headless Chromium. Without
# it, tests marked <marker> skip themselves; in CI a failed setup is an error, not a silent skip.
#   setup_hook MARKER ENV_VAR WHAT      (ENV_VAR=0 skips the hook, =1 runs it even when not root)
setup_hook() {
    local marker=$1 mode=${!2:-auto} what=$3 hook=.ci/setup-$1.sh
    [ -f "$hook" ] && [ "$mode" != 0 ] || return 0
    if [ "$mode" = 1 ] || { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }; then
        echo "== $what ($hook)"
        if ! bash "$hook"; then
            [ "${CI:-}" = true ] && { echo "error: $hook failed" >&2; exit 1; }
            echo "warning: $hook failed; tests marked $marker will skip" >&2
        fi
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    test)
        ensure_env
        setup_hook slurm RETINANET_SLURM "starting the SLURM test cluster"
        setup_hook chromium RETINANET_CHROMIUM "installing headless Chromium"
        echo "== ruff check ."
        ruff_rc=0
        ruff check . || ruff_rc=$?
        echo "== pytest"
        pytest_rc=0
        python -m pytest "$@" || pytest_rc=$?
        [ "$pytest_rc" = 5 ] && echo "error: pytest collected no tests" >&2
        [ "$ruff_rc" = 0 ] || echo "error: ruff found problems (exit $ruff_rc)" >&2
        [ "$pytest_rc" = 0 ] || echo "error: pytest failed (exit $pytest_rc)" >&2
        [ "$ruff_rc" = 0 ] && [ "$pytest_rc" = 0 ]
        ;;
    study)
        ensure_env
        exec snakemake --cores all "$@"
        ;;
    notebooks)
        ensure_env
        ensure_notebooks
        root=()  # Jupyter refuses to run as root (containers, CI machines) unless told
        [ "$(id -u)" = 0 ] && root=(--allow-root)
        exec jupyter lab --ServerApp.root_dir=analysis "${root[@]}" "$@"
        ;;
    *)
        usage
        ;;
esac
