package cli

import "github.com/spf13/cobra"

func newBenchCmd() *cobra.Command { return &cobra.Command{Use: "newBenchCmd-todo", Hidden: true} }
