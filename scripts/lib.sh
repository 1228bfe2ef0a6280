# Shared helpers for scripts/*: sourced, not run.
# Caches live outside the clone so reruns are incremental and nothing in the
# repository depends on them being there.
export SOVRA_CACHE="${SOVRA_CACHE:-$HOME/.cache/sovra}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SOVRA_CACHE/target}"
# The generative models: the configured default (generator.model) and the
# faster one the tests, fuzzing and bench/generate run.
SOVRA_DEFAULT_GENERATOR=qwen2.5-coder-1.5b-instruct
SOVRA_TEST_GENERATOR=qwen2.5-coder-0.5b-instruct
export SOVRA_TEST_PG_URL="${SOVRA_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Starts the local PostgreSQL cluster when it does not answer.
ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        return 0
    fi
    log "PostgreSQL is down; starting it"
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "installing PostgreSQL from Debian's packages"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && return 0
        sleep 1
    done
    echo "PostgreSQL did not start on 127.0.0.1:5432" >&2
    return 1
}

# Starts a local Redis (the shared-limits tests use 127.0.0.1:6379) when it
# does not answer.
ensure_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        return 0
    fi
    log "Redis is down; starting it"
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing Redis from Debian's packages"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
    fi
    redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 1 30); do
        redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "Redis did not start on 127.0.0.1:6379" >&2
    return 1
}

# Drops databases left behind by interrupted test runs.
drop_stale_test_databases() {
    psql "$SOVRA_TEST_PG_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'sovra\_test\_%'" 2>/dev/null |
        while read -r db; do
            [ -n "$db" ] && psql "$SOVRA_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        done
}

# A small Python environment with the official openai client (the test that
# drives the gateway with it) and PyYAML (the manifest checks). Prints the
# interpreter's path.
ensure_test_python() {
    local venv="$SOVRA_CACHE/test-venv"
    if ! "$venv/bin/python" -c 'import openai, yaml' 2>/dev/null; then
        log "installing the openai Python client and PyYAML into $venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q openai==3.57.0 pyyaml==6.0.3 >&2
    fi
    echo "$venv/bin/python"
}

# Debian's chromium and playwright-core (tests/web), for the page tests.
ensure_browser_tests() {
    if [ ! -x /usr/bin/chromium ]; then
        log "installing Debian's chromium for the page tests"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || {
            apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
        }
    fi
    if [ ! -d tests/web/node_modules/playwright-core ] || [ tests/web/package-lock.json -nt tests/web/node_modules ]; then
        log "installing playwright-core (tests/web, from the npm registry)"
        (cd tests/web && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
    export SOVRA_CHROMIUM=/usr/bin/chromium
}
