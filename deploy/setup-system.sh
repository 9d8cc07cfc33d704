#!/usr/bin/env bash
# Installs the OS packages receiptflow's embedded stack and tests need, only when they are missing:
#   redis-server (Debian package)          the profile store for the embedded stack and the tests
#   postgresql (Debian package)            the server-option warehouse, for the integration tests
#   openjdk-17-jre-headless, maven         the Apache Kafka broker and the resolution of its jars
#   prometheus (Debian package)            the Prometheus server and promtool, for the tests of deploy/prometheus
#   chromium, npm (Debian packages)        the browser the web page's tests drive (Playwright) and the
#                                          client that installs axe-core for their accessibility check
# It installs only with permission: as root, or with password-less sudo, and never when
# RECEIPTFLOW_NO_SYSTEM_INSTALL=1. Otherwise it names what is missing and exits non-zero.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# Builds the router's compiled fast path (rust/receiptflow_fast).
command -v cargo >/dev/null 2>&1 || missing+=(cargo)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "receiptflow setup: missing OS packages: ${missing[*]}"
if [ "${RECEIPTFLOW_NO_SYSTEM_INSTALL:-0}" = "1" ]; then
  echo "RECEIPTFLOW_NO_SYSTEM_INSTALL=1: install them yourself (apt-get install ${missing[*]})" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo)
else
  echo "not root and no password-less sudo: run 'sudo apt-get install ${missing[*]}' and retry" >&2
  exit 1
fi
# Keep the packages' own services from starting: the project starts its servers itself, on its own
# ports and data dirs (a system redis on 6379 would otherwise be picked up as "external").
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
