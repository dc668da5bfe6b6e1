#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's `prometheus` package when they are missing, and
# prints the path of `prometheus` (promtool sits next to it).
#
#   scripts/tools/install-prometheus.sh
#
# The chart monitoring tests (deploy/gen/test_monitoring.py) run `promtool check rules`,
# `promtool test rules` and a real `prometheus` on loopback. Debian's package also ships a service
# unit; nothing here starts it (the tests start their own server on a free loopback port).
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    command -v prometheus
    exit 0
fi
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "install-prometheus: apt-get install prometheus" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >&2
prometheus --version 2>&1 | head -1 >&2
command -v prometheus
