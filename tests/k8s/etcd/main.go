// Command etcd is etcd's own server, built from its module for the tests' API server (Debian's etcd
// is too old for current kube-apiservers).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
