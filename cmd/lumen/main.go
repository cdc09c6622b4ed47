// Command lumen is the command line of Lumen: status, endpoints, resources and the local lab.
package main

import "github.com/lumen-net/lumen/internal/cli"

func main() { cli.Execute() }
