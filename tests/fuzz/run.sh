#!/usr/bin/env bash
# Builds the cargo-fuzz (libFuzzer) targets of fuzz/ and runs each for FUZZ_SECONDS (default 20),
# starting from the committed seeds in fuzz/corpus/<target>/. Fails on any crash, panic, leak,
# timeout or out-of-memory. Slow artefacts live in $TBSC_CACHE (default /var/cache/tbsc): the
# cargo-fuzz binary, the instrumented build, the growing working corpus and crash artefacts.
#
#   tests/fuzz/run.sh                        # every target, 20 s each
#   FUZZ_SECONDS=300 tests/fuzz/run.sh framing
set -euo pipefail
cd "$(dirname "$0")/../.."

TBSC_CACHE="${TBSC_CACHE:-/var/cache/tbsc}"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if [ "$FUZZ_SECONDS" = 0 ]; then
  # libFuzzer reads -max_total_time=0 as "forever".
  if [ "${CI:-}" = "true" ]; then
    echo "!! FUZZ_SECONDS=0 is not allowed in CI: the fuzz targets must run" >&2
    exit 1
  fi
  echo "fuzzing skipped (FUZZ_SECONDS=0)"
  exit 0
fi
FUZZ_ROOT="$TBSC_CACHE/cargo-fuzz"
FUZZ_TARGET_DIR="$TBSC_CACHE/fuzz-target"
FUZZ_WORK="$TBSC_CACHE/fuzz-work"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)"
  if ! rustup toolchain install nightly --profile minimal; then
    # The machine image ships nightly; a machine that has none and cannot download it (no
    # access to static.rust-lang.org) cannot fuzz at all. In CI that is a failure, not a skip;
    # by hand, say so and stop.
    echo "!! cannot fuzz: no nightly toolchain and none can be installed" >&2
    if [ "${CI:-}" = "true" ]; then
      exit 1
    fi
    exit 0
  fi
fi

if [ ! -x "$FUZZ_ROOT/bin/cargo-fuzz" ]; then
  echo "== installing cargo-fuzz into $FUZZ_ROOT"
  cargo +nightly install cargo-fuzz --locked --root "$FUZZ_ROOT"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"

# Options go before the target: everything after `--` is for libFuzzer.
fuzz() {
  local command="$1"
  shift
  cargo +nightly fuzz "$command" --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" "$@"
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

echo "== building fuzz targets: ${targets[*]}"
fuzz build

failed=()
for target in "${targets[@]}"; do
  corpus="$FUZZ_WORK/corpus/$target"
  artifacts="$FUZZ_WORK/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  dict=()
  if [ -f "fuzz/dict/$target.dict" ]; then dict=("-dict=fuzz/dict/$target.dict"); fi
  log="$FUZZ_WORK/$target.log"
  echo "== fuzzing $target for ${FUZZ_SECONDS}s (corpus $corpus, log $log)"
  # New inputs go to the working corpus in the cache; the committed seeds are only read.
  if fuzz run "$target" "$corpus" "fuzz/corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$log" | tr '\n' ' '
    echo "corpus: $(find "$corpus" -type f | wc -l) files"
  else
    echo "!! $target FAILED; last lines of $log:"
    tail -n 40 "$log"
    echo "!! crashing input(s): $(ls "$artifacts")"
    echo "!! reproduce: PATH=$FUZZ_ROOT/bin:\$PATH cargo +nightly fuzz run --fuzz-dir fuzz" \
      "--target-dir $FUZZ_TARGET_DIR $target $artifacts/<file>"
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}"
  exit 1
fi
echo "== fuzzing: no crash in ${targets[*]}"
