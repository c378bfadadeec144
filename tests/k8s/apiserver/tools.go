//go:build tools

// Package tools pins kube-apiserver into this module so that `go build k8s.io/kubernetes/cmd/kube-apiserver`
// resolves it with the replaces in go.mod.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
