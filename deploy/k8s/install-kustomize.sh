#!/usr/bin/env bash
# Builds kustomize from the Go module proxy into the given bin directory (the virtualenv's), for
# the static checks of deploy/k8s (tests/unit/test_deploy_bundle.py). Needs Go; without it, it says
# so and exits 0, and that one test is skipped with the reason (the schema checks still run).
#   bash deploy/k8s/install-kustomize.sh .venv/bin
set -euo pipefail
VERSION=v5.8.1  # the newest that builds with Go 1.26 (v5.8.3 needs Go 1.27)
bin=$(cd "${1:?usage: install-kustomize.sh BIN_DIR}" && pwd)
if [ -x "$bin/kustomize" ] && "$bin/kustomize" version 2>/dev/null | grep -q "${VERSION}"; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "receiptflow setup: Go is not installed: kustomize not built (its check in the deploy tests is skipped)"
  exit 0
fi
echo "receiptflow setup: building kustomize ${VERSION} from the Go module proxy"
GOBIN="$bin" go install "sigs.k8s.io/kustomize/kustomize/v5@${VERSION}"
