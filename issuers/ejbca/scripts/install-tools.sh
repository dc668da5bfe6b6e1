#!/bin/sh
# Installs what the certbridge-ejbca tests need: openssl (chain verification).
set -eu
if ! command -v openssl >/dev/null 2>&1; then
    apt-get update && apt-get install -y openssl
fi
openssl version
