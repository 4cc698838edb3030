#!/usr/bin/env bash
# Installs a single-node SLURM's parts (Debian's slurm-wlm and munge) for the
# SLURM profile's integration test (tests/integration/test_slurm.py). Needs root
# and apt-get; the test starts and stops the daemons itself.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; }
