#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests run against: kube-apiserver and etcd, from the Go
# modules in tests/k8s/ (see tests/support/kubeapi.py). Once per machine: the binaries go to a cache
# outside the repository, in a folder named by the hash of those modules, and later runs reuse them.
# A cold build takes 10-20 minutes on two cores; never commit the binaries.
#
#   scripts/build-kube.sh              build what is missing, print where the binaries are
#   scripts/build-kube.sh --print-dir  only print the folder the binaries are (or would be) in
#
# SYSCRIBE_KUBE_CACHE moves the cache (default ~/.cache/syscribe/kube); GO names the go command.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
k8s="$repo/tests/k8s"
cache=${SYSCRIBE_KUBE_CACHE:-$HOME/.cache/syscribe/kube}

# Every file that decides what gets built: the modules' requirements and their Go sources.
key=$(cd "$k8s" && cat apiserver/go.mod apiserver/go.sum apiserver/*.go etcd/go.mod etcd/go.sum etcd/*.go \
  | sha256sum | cut -c1-16)
dir="$cache/$key"

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir"
  exit 0
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--print-dir]" >&2
  exit 2
fi

if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then
  echo "build-kube: kube-apiserver and etcd already built in $dir"
  exit 0
fi

# CI may not have Go's folder on PATH: look where the official tarball puts it too.
go=${GO:-$(command -v go || true)}
[ -n "$go" ] || { [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go; }
if [ -n "${GO:-}" ] && ! command -v "$GO" >/dev/null; then
  echo "build-kube: Go 1.26+ not found: GO=$GO is not a command; install Go from https://go.dev/dl/" >&2
  exit 1
elif [ -z "$go" ]; then
  echo "build-kube: Go 1.26+ not found: not on PATH nor in /usr/local/go/bin; install it from https://go.dev/dl/" >&2
  exit 1
fi
version=$("$go" env GOVERSION 2>/dev/null || echo "not a working Go")
minor=$(echo "$version" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$minor" ] || [ "$minor" -lt 26 ]; then
  echo "build-kube: Go 1.26+ not found: $go is $version; install a newer one from https://go.dev/dl/" >&2
  exit 1
fi

mkdir -p "$cache"
# Built into a temporary folder next to the final one, then renamed: an interrupted build never
# leaves a binary that looks finished.
tmp=$(mktemp -d "$cache/.build-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dir"

build() {  # build NAME MODULE-DIR PACKAGE
  local name=$1 module=$2 package=$3
  if [ -x "$dir/$name" ]; then
    echo "build-kube: $name already built"
    return
  fi
  echo "build-kube: building $name with $version into $dir (a cold build takes minutes)"
  local start=$SECONDS
  (cd "$module" && CGO_ENABLED=0 "$go" build -trimpath -o "$tmp/$name" "$package")
  mv -f "$tmp/$name" "$dir/$name"
  echo "build-kube: $name built in $((SECONDS - start)) s"
}

build etcd "$k8s/etcd" .
build kube-apiserver "$k8s/apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "build-kube: kube-apiserver and etcd in $dir"
