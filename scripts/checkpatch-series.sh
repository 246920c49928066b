#!/usr/bin/env bash
# Runs the pinned kernel's checkpatch.pl --strict on every patch of the series.
# Silent (exit 0) when all patches are clean.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(.venv/bin/python -m harness source 2>/dev/null | tail -n 1)
mapfile -t patches < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' kernel-patches/series)
[ ${#patches[@]} -gt 0 ] || exit 0
status=0
for p in "${patches[@]}"; do
	# checkpatch looks for its helper files relative to the current directory.
	out=$(cd "$src" && perl scripts/checkpatch.pl --strict --quiet --no-summary "$OLDPWD/kernel-patches/$p" 2>&1) ||
		status=1
	if [ -n "$out" ]; then
		echo "checkpatch: $p"
		echo "$out"
		status=1
	fi
done
exit $status
