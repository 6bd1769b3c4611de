#!/usr/bin/env bash
# Run the performance benchmark suite (see bench/README.md), one script after the other.
#
#   bench/run_all.sh              # every script with its defaults (about 25 minutes)
#   bench/run_all.sh warm_blob    # only the named ones
#
# Each script starts its own servers on free loopback ports and stops them when it ends.
# A failing script does not stop the others; the exit status says whether any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

missing=()
for program in docker-registry skopeo redis-server curl nginx wrk; do
    command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] || missing+=("$program")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}; install with: apt-get install -y ${missing[*]}" >&2
    exit 2
fi

scripts=("$@")
if [ ${#scripts[@]} -eq 0 ]; then
    scripts=(warm_blob warm_manifest cold_pull cold_blob cold_blob_tls concurrent_cold rss access_control)
fi

failed=()
for script in "${scripts[@]}"; do
    # cold_blob_tls: cold_blob with the upstream serving HTTPS.
    args=()
    module=$script
    if [ "$script" = cold_blob_tls ]; then
        module=cold_blob
        args=(--upstream-tls)
    fi
    echo "== $PYTHON -m bench.$module ${args[*]}"
    started=$(date +%s)
    if ! "$PYTHON" -m "bench.$module" "${args[@]}"; then
        failed+=("$script")
    fi
    echo "== bench.$script took $(($(date +%s) - started)) s"
    echo
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
