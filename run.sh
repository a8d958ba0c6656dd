#!/usr/bin/env bash
# Set up (first time) and run the seed experiment: encrypted training of the seed's Net.
source "$(dirname "$0")/scripts/_env.sh"
exec python scripts/train_xor.py "$@"
