package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/resource"
)

// kvstoreFlag adds --kvstore to cmd; kvstoreEndpoint resolves its default.
func kvstoreFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "kvstore", "", "etcd endpoint (default $LUMEN_KVSTORE, else the lab's unix:///run/lumen-lab/<lab>/etcd.sock)")
}

func kvstoreEndpoint(flag string) string {
	if flag != "" {
		return flag
	}
	if e := os.Getenv("LUMEN_KVSTORE"); e != "" {
		return e
	}
	return "unix://" + filepath.Join(labpath.Dir(g.lab), "etcd.sock")
}

func dialKVStore(ctx context.Context, flag string) (*kvstore.Client, error) {
	return kvstore.Dial(ctx, kvstoreEndpoint(flag))
}

// readManifests decodes every -f file (or "-" for stdin), reporting all bad
// documents of all files before anything is written.
func readManifests(cmd *cobra.Command, reg *resource.Registry, files []string) ([]resource.Object, error) {
	if len(files) == 0 {
		return nil, errors.New("no manifest given: use -f FILE (or -f - for stdin)")
	}
	var objs []resource.Object
	var errs []error
	for _, f := range files {
		var data []byte
		var err error
		source := f
		if f == "-" {
			source = "<stdin>"
			data, err = io.ReadAll(cmd.InOrStdin())
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reading manifest: %w", err))
			continue
		}
		o, err := reg.Decode(source, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("no objects in %s", strings.Join(files, ", "))
	}
	return objs, nil
}

// resultJSON is one line of apply/delete output in -o json.
type resultJSON struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Action    string `json:"action"`
}

func printResults(w io.Writer, rs []resource.Result, asJSON bool) error {
	if asJSON {
		out := make([]resultJSON, 0, len(rs))
		for _, r := range rs {
			md := r.Object.Metadata
			out = append(out, resultJSON{Kind: r.Object.Kind, Namespace: md.Namespace, Name: md.Name, Action: string(r.Action)})
		}
		return PrintJSON(w, out)
	}
	for _, r := range rs {
		if r.Action != resource.NotFound {
			fmt.Fprintf(w, "%s %s\n", r.Object.Ref(), r.Action)
		}
	}
	return nil
}

func newApplyCmd(reg *resource.Registry) *cobra.Command {
	var files []string
	var kv string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update resources from YAML manifests in the store",
		Long: `Create or update Kubernetes-shaped resources (Namespace, Pod, ...) from
multi-document YAML files. Every document is validated first: if any is bad,
nothing is applied.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			objs, err := readManifests(cmd, reg, files)
			if err != nil {
				return err
			}
			c, err := dialKVStore(cmd.Context(), kv)
			if err != nil {
				return err
			}
			defer c.Close()
			// Everything is checked before anything (cluster IPs included) is
			// written: a bad document leaves the store as it was.
			if err := reg.Preflight(cmd.Context(), c, objs); err != nil {
				return err
			}
			claims, err := assignServices(cmd.Context(), c, objs)
			if err != nil {
				return errors.Join(err, claims.finish(cmd.Context(), 0))
			}
			rs, err := reg.Apply(cmd.Context(), c, objs)
			err = errors.Join(err, claims.finish(cmd.Context(), len(rs)))
			if perr := printResults(cmd.OutOrStdout(), rs, asJSON); err == nil {
				err = perr
			}
			return err
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, or - for stdin (repeatable)")
	kvstoreFlag(cmd, &kv)
	return cmd
}

func newDeleteCmd(reg *resource.Registry) *cobra.Command {
	var files []string
	var kv, namespace string
	var ignoreNotFound bool
	cmd := &cobra.Command{
		Use:   "delete (-f FILE | KIND NAME...)",
		Short: "Delete resources named in manifests, or by kind and name",
		Long: `Delete resources named in manifests (-f), or given as KIND NAME...
Deleting a namespace deletes everything in it.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			var objs []resource.Object
			switch {
			case len(files) > 0 && len(args) > 0:
				return errors.New("give either -f FILE or KIND NAME..., not both")
			case len(files) > 0:
				if objs, err = readManifests(cmd, reg, files); err != nil {
					return err
				}
			case len(args) >= 2:
				kind, err := reg.ResolveKind(args[0])
				if err != nil {
					return err
				}
				for _, name := range args[1:] {
					objs = append(objs, resource.Object{APIVersion: kind.APIVersion, Kind: kind.Kind,
						Metadata: resource.Metadata{Name: name, Namespace: namespace}})
				}
			default:
				return errors.New("nothing to delete: use -f FILE or KIND NAME...")
			}
			c, err := dialKVStore(cmd.Context(), kv)
			if err != nil {
				return err
			}
			defer c.Close()
			gone, err := servicesToDelete(cmd.Context(), reg, c, objs)
			if err != nil {
				return err
			}
			rs, err := reg.Delete(cmd.Context(), c, objs)
			err = errors.Join(err, releaseDeleted(cmd.Context(), c, gone))
			if perr := printResults(cmd.OutOrStdout(), rs, asJSON); err == nil {
				err = perr
			}
			if err != nil || ignoreNotFound {
				return err
			}
			var missing []string
			for _, r := range rs {
				if r.Action == resource.NotFound {
					md := r.Object.Metadata
					nf := &resource.NotFoundError{Kind: r.Object.Kind, Namespace: md.Namespace, Name: md.Name}
					if k, err := reg.ResolveKind(nf.Kind); err == nil {
						nf.Plural = k.PluralName()
					}
					missing = append(missing, nf.Error())
				}
			}
			if len(missing) > 0 {
				return errors.New(strings.Join(missing, "\n"))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, or - for stdin (repeatable)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of KIND NAME...")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "succeed when an object does not exist")
	kvstoreFlag(cmd, &kv)
	return cmd
}

func newGetCmd(reg *resource.Registry) *cobra.Command {
	var kv, namespace string
	var all bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show resources from the store",
		Example: `  lumen get pods
  lumen get pods -A
  lumen get pod web -n prod -o json
  lumen get namespaces`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			asJSON, err := JSONOutput()
			if err != nil {
				return err
			}
			kind, err := reg.ResolveKind(args[0])
			if err != nil {
				return err
			}
			if all && len(args) == 2 {
				return errors.New("a resource cannot be retrieved by name across all namespaces")
			}
			c, err := dialKVStore(cmd.Context(), kv)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()

			var objs []resource.Object
			if len(args) == 2 {
				obj, err := resource.Get(cmd.Context(), c, kind, namespace, args[1])
				if err != nil {
					return err
				}
				if asJSON {
					return PrintJSON(out, obj)
				}
				objs = []resource.Object{*obj}
			} else {
				ns := namespace
				if all {
					ns = ""
				}
				if objs, err = resource.List(cmd.Context(), c, kind, ns); err != nil {
					return err
				}
				if asJSON {
					return PrintJSON(out, map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
				}
			}
			if len(objs) == 0 {
				if kind.Namespaced && !all {
					fmt.Fprintf(cmd.ErrOrStderr(), "No resources found in %s namespace.\n", namespace)
				} else {
					fmt.Fprintln(cmd.ErrOrStderr(), "No resources found.")
				}
				return nil
			}
			return printResourceTable(out, kind, objs, all && kind.Namespaced)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list across all namespaces")
	kvstoreFlag(cmd, &kv)
	return cmd
}

func printResourceTable(out io.Writer, kind *resource.Kind, objs []resource.Object, withNamespace bool) error {
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	var head []string
	if withNamespace {
		head = append(head, "NAMESPACE")
	}
	head = append(head, "NAME")
	for _, col := range kind.Columns {
		head = append(head, col.Header)
	}
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for i := range objs {
		var row []string
		if withNamespace {
			row = append(row, objs[i].Metadata.Namespace)
		}
		row = append(row, objs[i].Metadata.Name)
		for _, col := range kind.Columns {
			row = append(row, col.Value(&objs[i]))
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}
