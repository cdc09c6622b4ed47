// Command lumen-cni is the Lumen CNI plugin; container runtimes run it to plug
// pods into a Lumen node. See internal/cni.
package main

import "github.com/lumen-net/lumen/internal/cni"

func main() { cni.Main() }
