package cli

import "github.com/spf13/cobra"

func newLabCmd() *cobra.Command { return &cobra.Command{Use: "newLabCmd-todo", Hidden: true} }
