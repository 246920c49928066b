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

# The arm64 guest's busybox (python -m harness --arch arm64): Debian's
# busybox-static for arm64, downloaded and extracted into the harness cache
# (harness/arch.py reads it from there), never installed: installing it would
# replace the host's busybox. Needs arm64 as a dpkg foreign architecture for
# apt to know the package; nothing else is installed for arm64.
cache=${LIVEDUMP_CACHE:-$HOME/.cache/livedump}
arm64_busybox_dir=$cache/downloads/arm64/busybox-static
if [ ! -x "$arm64_busybox_dir/bin/busybox" ]; then
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		if [ "$(id -u)" -ne 0 ]; then
			echo "setup: need root to add arm64 as a dpkg architecture (for busybox-static:arm64)" >&2
			exit 1
		fi
		echo "setup: adding arm64 as a dpkg foreign architecture (for busybox-static:arm64)"
		dpkg --add-architecture arm64
		apt-get update -qq
	fi
	echo "setup: downloading busybox-static:arm64 into $arm64_busybox_dir"
	download=$(mktemp -d)
	# apt fetches as its _apt user: let it write there (else it warns and fetches as root).
	chown _apt "$download" 2>/dev/null || true
	(cd "$download" && apt-get download -qq busybox-static:arm64)
	rm -rf "$arm64_busybox_dir.tmp"
	mkdir -p "$arm64_busybox_dir.tmp"
	dpkg-deb -x "$download"/busybox-static_*_arm64.deb "$arm64_busybox_dir.tmp"
	rm -rf "$download" "$arm64_busybox_dir"
	mv "$arm64_busybox_dir.tmp" "$arm64_busybox_dir"
fi
