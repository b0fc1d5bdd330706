#!/usr/bin/env bash
# Build the netns test binary (and the podroute binary it drives) and run the
# whole netns suite inside a VM on Debian's cloud kernel, where ipip exists.
# Inside the VM the ipip tests must run (PODROUTE_IN_VM=1 turns a missing
# ipip into a failure, never a skip). Extra arguments go to the test binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --bin podroute
# The artifact of the test target named netns (the podroute binary is built too).
test_bin=$(cargo test --quiet --test netns --no-run --message-format=json \
    | grep '"kind":\["test"\]' | grep '"name":"netns"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[[ -x $test_bin ]] || { echo "could not find the netns test binary" >&2; exit 1; }

export PODROUTE_VM_EXTRA_BINS="$PWD/target/debug/podroute"
export PODROUTE_REQUIRE_ROOT_TESTS=1
exec netns-tests/vm/run.sh "$test_bin" "$@"
