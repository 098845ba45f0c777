#!/usr/bin/env bash
# Regenerate the README's gallery with onecycle itself, offline, on the bundled 3-vs-7 set (~20 s on 2 CPU cores):
#   bash scripts/make_gallery.sh [OUT_DIR]      (default: docs/gallery)
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../docs/gallery}")
runs=$(mktemp -d)
mkdir -p "$out"
dir() { python -c 'import json,sys; print(json.load(sys.stdin)["run_dir"])'; }

find_run=$(onecycle find --config mnist_sample --runs-dir "$runs" --json | dir)
one=$(onecycle train --config mnist_sample --activation-stats --runs-dir "$runs" --json | dir)
const=$(onecycle train --config mnist_sample --schedule constant --activation-stats --runs-dir "$runs" --json | dir)
cmp=$(onecycle compare "$one" "$const" --runs-dir "$runs" --json | dir)
onecycle schedule --config cifar --out "$out/schedule_cifar.png" > /dev/null

cp "$find_run/lr_find.png" "$out/lr_find.png"
cp "$one/schedule.png" "$out/schedule.png"
cp "$one/curves.png" "$out/curves.png"
cp "$one/activations.png" "$out/activations.png"
cp "$cmp/compare.png" "$out/compare.png"
ls -l "$out"
