#!/usr/bin/env bash
# Builds the recorder's CO-RE object: scripts/build-bpf.sh SRC OBJ
#
# The object is committed, and tests/test_bpf_object.py rebuilds it with this script and compares
# bytes, so the build must be reproducible: a pinned compiler, the source compiled by its base name
# from its own directory with the compilation directory recorded as ".", and DWARF stripped (BTF,
# which libbpf needs for CO-RE and map types, is kept).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 SRC.bpf.c OUT.bpf.o" >&2
  exit 2
fi
CLANG=${CLANG:-clang-14}
LLVM_STRIP=${LLVM_STRIP:-llvm-strip-14}
for tool in "$CLANG" "$LLVM_STRIP"; do
  command -v "$tool" >/dev/null || { echo "build-bpf: $tool not found: apt-get install clang-14 llvm-14" >&2; exit 1; }
done

src_dir=$(cd "$(dirname "$1")" && pwd)
src_name=$(basename "$1")
out_dir=$(mkdir -p "$(dirname "$2")" && cd "$(dirname "$2")" && pwd)
out="$out_dir/$(basename "$2")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

# bpf_helpers.h and friends come from libbpf-dev; the uapi types from linux-libc-dev. Neither depends
# on the build host's kernel.
(cd "$src_dir" && "$CLANG" -O2 -g -target bpf \
  -fdebug-compilation-dir=. -fno-ident \
  -I"/usr/include/$(uname -m)-linux-gnu" \
  -Wall -Werror \
  -c "$src_name" -o "$tmp")
"$LLVM_STRIP" -g "$tmp"
mv "$tmp" "$out"
trap - EXIT
