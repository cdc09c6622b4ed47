// Command lumen is the command line of Lumen: status, endpoints, resources and the local lab.
package main

import (
	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/bench/benchcmd"
	"github.com/lumen-net/lumen/internal/cli"
	"github.com/lumen-net/lumen/internal/lab/labcmd"
)

func main() {
	cli.Execute(cli.Options{Commands: []*cobra.Command{labcmd.New(), benchcmd.New()}, OpenLab: labcmd.OpenLab})
}
