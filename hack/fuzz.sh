#!/usr/bin/env bash
# Gives every Go fuzz target of the repository a short run (CI: each target
# its own FUZZTIME, default 3s). The seed corpora already run in `make test`;
# this explores beyond them. A failure leaves its input in testdata/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-3s}
fail=0
while IFS=: read -r file name; do
	pkg=./$(dirname "$file")
	echo "== $pkg $name ($t)"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" -parallel 1 "$pkg" >/tmp/lumen-fuzz.log 2>&1; then
		tail -30 /tmp/lumen-fuzz.log
		fail=1
	fi
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' cmd internal | sed 's/func //' | sort -u)
exit $fail
