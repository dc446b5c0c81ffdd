#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: unit tests, the BPF
# integration tests on this kernel, and the QEMU guest tests. Prints one
# closing line "N passed, N failed, N skipped" and exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

meson test -C build --print-errorlogs --num-processes 1 "$@"
rc=$?
python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
ok = fail = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r == "SKIP":
        skip += 1
    else:
        fail += 1
print("%d passed, %d failed, %d skipped" % (ok, fail, skip))
PY
exit $rc
