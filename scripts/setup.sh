#!/usr/bin/env bash
# Installs everything the harness and the tests need, idempotently: the Debian
# packages in scripts/debian-packages.txt and a venv with requirements.txt.
# Fast when nothing is missing: apt is only asked when a package is absent and
# pip only when requirements.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/debian-packages.txt)
missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing Debian packages: ${missing[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: need root to install packages (run as root or install them yourself)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

venv=.venv
stamp=$venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
	echo "setup: creating $venv"
	python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "setup: installing Python requirements into $venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
	echo "$want" > "$stamp"
fi
