#!/usr/bin/env bash
# apt-get install the Debian packages named as arguments (sudo when not root); nothing when
# none is named. Used by the set-up scripts, which decide what is missing.
set -euo pipefail
(($#)) || exit 0
SUDO=""
[[ $EUID -eq 0 ]] || SUDO=sudo
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "$@"
