#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine or a warm one:
#   1. installs the test peers that are missing (Debian packages, as root),
#   2. checks formatting and lints,
#   3. builds and runs every test (unit, in-process API, interop with real peers),
#      with a throw-away PostgreSQL cluster (initdb/pg_ctl in a temp directory)
#      for the store's second backend and a second pass of the server tests on it,
#   4. smoke-runs each fuzz target and the benchmark in quick mode.
# Environment: CARGO_TARGET_DIR (default ~/.cache/palisade-target, reused across
# runs), PALISADE_SKIP_FUZZ=1 and PALISADE_SKIP_BENCH=1 to skip steps 4.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# Debian packages the tests drive as peers: tool -> package.
declare -A PEERS=([openssl]=openssl [curl]=curl [sqlite3]=sqlite3 [python3]=python3 [mosquitto_pub]=mosquitto-clients [mosquitto]=mosquitto
  [softhsm2-util]=softhsm2 [pkcs11-tool]=opensc [swtpm]=swtpm [swtpm_setup]=swtpm-tools
  [tpm2_pcrread]=tpm2-tools [pkg-config]=pkg-config [fw_printenv]=libubootenv-tool
  [bsdiff]=bsdiff [xdelta3]=xdelta3 [zstd]=zstd [sha256sum]=coreutils [nft]=nftables [ip]=iproute2 [dnsmasq]=dnsmasq-base [tcpdump]=tcpdump [softflowd]=softflowd
  [nmap]=nmap [hping3]=hping3 [nfcapd]=nfdump [sshd]=openssh-server [ssh]=openssh-client [sshpass]=sshpass [gcc]=gcc
  [chromium]=chromium [chromedriver]=chromium-driver [npm]=npm [udhcpc]=udhcpc [psql]=postgresql-client [haproxy]=haproxy
  [coap-client-openssl]=libcoap3-bin)
missing=()
for tool in "${!PEERS[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PEERS[$tool]}")
done
# The PostgreSQL server (its binaries live outside PATH).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# C libraries the TPM crate (tss-esapi) builds against.
pkg-config --exists tss2-esys tss2-tctildr tss2-mu 2>/dev/null || missing+=(libtss2-dev)
# OpenSSL, for the CoAP endpoint's DTLS (the one exception to rustls).
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
if ((${#missing[@]})); then
  step "installing test peers: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing test peers: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    [ "${CI:-}" = true ] && exit 1
  fi
fi

# PyPI test peers: module -> package.
declare -A PYPI=([paho.mqtt]=paho-mqtt [securesystemslib.dsse]='securesystemslib[crypto]' [cryptography]=cryptography [tuf.ngclient]=tuf
  [playwright]=playwright [moto.server]='moto[server]' [packaging.version]=packaging [cyclonedx_py]=cyclonedx-bom
  [univers.versions]=univers [aiocoap.oscore]='aiocoap[oscore]')
for module in "${!PYPI[@]}"; do
  if ! python3 -c "import $module" >/dev/null 2>&1; then
    pkg="${PYPI[$module]}"
    step "installing test peer from PyPI: $pkg"
    python3 -m pip install --quiet --disable-pip-version-check "$pkg" \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$pkg"
  fi
done

# axe-core (npm) for the console's accessibility check, in a cache of its own;
# Playwright drives Debian's Chromium (no browser download).
export AXE_CORE_JS="${AXE_CORE_JS:-$HOME/.cache/palisade-peers/node_modules/axe-core/axe.min.js}"
if [ ! -f "$AXE_CORE_JS" ]; then
  step "installing test peer from npm: axe-core"
  mkdir -p "$HOME/.cache/palisade-peers"
  npm install --silent --no-audit --no-fund --prefix "$HOME/.cache/palisade-peers" axe-core@4 >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"
# Clones live in fresh directories: incremental state would pile up per path.
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (the palisade binary the interop tests run)"
cargo build --workspace --locked

step "cargo deny (licences, one TLS/crypto stack, sources)"
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny
cargo fetch --locked
cargo deny --offline check licenses bans sources

# PostgreSQL for the store's second backend: a throw-away cluster in a temp
# directory, on a free loopback port, password-authenticated over TCP,
# stopped by PID when the script ends.
pg_dir="" pg_pid=""
cleanup() {
  local status=$?
  # A failed run keeps the database's own account of it in the output.
  if [ "$status" -ne 0 ] && [ -n "$pg_dir" ] && [ -f "$pg_dir/server.log" ]; then
    echo "--- PostgreSQL server log (last 60 lines) ---" >&2
    tail -n 60 "$pg_dir/server.log" >&2 || true
  fi
  if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
    kill -INT "$pg_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  [ -n "$pg_dir" ] && rm -rf "$pg_dir"
  rm -f "${log:-}"
}
trap cleanup EXIT
start_postgres() {
  pg_dir=$(mktemp -d /tmp/palisade-pg.XXXXXX)
  PALISADE_TEST_POSTGRES_URL=$(bash scripts/postgres.sh start "$pg_dir")
  export PALISADE_TEST_POSTGRES_URL
  pg_pid=$(head -n 1 "$pg_dir/data/postmaster.pid")
}
step "starting PostgreSQL (temporary cluster)"
start_postgres

step "cargo test"
log="$(mktemp)"
# Doc tests are not used (no examples in docs yet); --lib --bins --tests runs the rest.
cargo test --workspace --locked --lib --bins --tests 2>&1 | tee "$log"

# The store's suite ran on both engines above (tests/postgres_store.rs); the
# servers of the API, EST, MQTT, OTA and monitoring tests run once more with
# their store in PostgreSQL (the rest run on SQLite only: they exercise other
# peers, not the database).
step "API, EST, MQTT, OTA and monitoring tests with the store on PostgreSQL"
PALISADE_INTEROP_POSTGRES="$PALISADE_TEST_POSTGRES_URL" cargo test --locked \
  -p palisade --test api -p palisade-interop --test est --test mqtt --test ota --test monitoring \
  2>&1 | tee -a "$log"
passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
# Only cargo's own result lines count (a peer's log line such as "fd 8 failed"
# must not).
failed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s+=$6} END {print s+0}')

if [ "${PALISADE_SKIP_FUZZ:-0}" != 1 ]; then
  step "fuzz smoke run (20 s per target, two at a time)"
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
  export FUZZ_LOGS CARGO_TARGET_DIR
  FUZZ_LOGS=$(mktemp -d)
  (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" cargo fuzz build)
  fuzz_one() {
    if (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" \
      cargo fuzz run "$1" -- -max_total_time=20 -rss_limit_mb=2048 >"$FUZZ_LOGS/$1.log" 2>&1); then
      echo "fuzz $1: $(grep -E '^Done' "$FUZZ_LOGS/$1.log" | tail -n 1)"
    else
      echo "fuzz $1 FAILED; the crash input is under fuzz/artifacts/$1:" >&2
      grep -vE '^ +[0-9]+: |^ +at ' "$FUZZ_LOGS/$1.log" | tail -n 40 >&2
      return 1
    fi
  }
  export -f fuzz_one
  # libFuzzer runs one process per target: two at once use CI's two cores.
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list) | xargs -P 2 -n 1 bash -c 'fuzz_one "$0"' || exit 1
  rm -rf "$FUZZ_LOGS"
fi

if [ "${PALISADE_SKIP_BENCH:-0}" != 1 ]; then
  step "benchmark smoke run (quick mode; full figures: see BENCHMARKS.md)"
  PALISADE_BENCH_POSTGRES="$PALISADE_TEST_POSTGRES_URL" cargo bench -p palisade-server --bench issuance --locked -- --quick
  cargo bench -p palisade-server --bench console --locked -- --quick
  cargo build --release -p palisade -p palisade-agent -p palisade-edge --locked
  cargo bench -p palisade-interop --bench est_enroll --locked -- --quick
  cargo bench -p palisade-interop --bench advisories --locked -- --quick
  PALISADE_BENCH_POSTGRES="$PALISADE_TEST_POSTGRES_URL" cargo bench -p palisade-interop --bench cluster_revocation --locked -- --quick
  PALISADE_BENCH_POSTGRES="$PALISADE_TEST_POSTGRES_URL" cargo bench -p palisade-interop --bench fleet_scale --locked -- --quick
  cargo bench -p palisade-interop --bench mqtt_vs_mosquitto --locked -- --quick
  cargo bench -p palisade-interop --bench coap_dtls --locked -- --quick
  cargo bench -p palisade-interop --bench coap_oscore --locked -- --quick
  cargo bench -p palisade-interop --bench hardware_keys --locked -- --quick
  cargo bench -p palisade-interop --bench ota --locked -- --quick
  cargo bench -p palisade-interop --bench policy --locked -- --quick
  cargo bench -p palisade-interop --bench flow_ingest --locked -- --quick
  cargo bench -p palisade-interop --bench detect_eval --locked -- --quick
  cargo bench -p palisade-interop --bench detect_soak --locked -- --quick
fi

# The plain summary line CI reads.
echo "tests: ${passed} passed, ${failed} failed"
