package cli

import "github.com/spf13/cobra"

func newBPFCmd() *cobra.Command { return &cobra.Command{Use: "newBPFCmd-todo", Hidden: true} }
