package cli

import "github.com/spf13/cobra"

func newApplyCmd() *cobra.Command { return &cobra.Command{Use: "newApplyCmd-todo", Hidden: true} }

func newDeleteCmd() *cobra.Command { return &cobra.Command{Use: "newDeleteCmd-todo", Hidden: true} }

func newGetCmd() *cobra.Command { return &cobra.Command{Use: "newGetCmd-todo", Hidden: true} }
