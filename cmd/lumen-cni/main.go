// Command lumen-cni is the Lumen CNI plugin; container runtimes run it to plug
// pods into a Lumen node. See internal/cni. `lumen-cni install` (outside a
// runtime) puts the plugin and its conflist on a node, see internal/cniinstall.
package main

import (
	"os"

	"github.com/lumen-net/lumen/internal/cni"
	"github.com/lumen-net/lumen/internal/cniinstall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install" && os.Getenv("CNI_COMMAND") == "" {
		cniinstall.Main(os.Args[2:])
		return
	}
	cni.Main()
}
