package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lumen-net/lumen/deploy/crds"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ApplyCRDs creates or updates every CRD of deploy/crds and waits until
// each is Established (served). Without a deadline on ctx it waits at most
// a minute. log may be nil.
func ApplyCRDs(ctx context.Context, cfg *rest.Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	all, err := crds.All()
	if err != nil {
		return fmt.Errorf("reading the CRDs: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("applying the CRDs: %w", err)
	}
	client := dyn.Resource(crdResource)
	for _, crd := range all {
		if err := applyCRD(ctx, client, crd); err != nil {
			return err
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	for _, crd := range all {
		if err := waitEstablished(ctx, client, crd.GetName()); err != nil {
			return err
		}
		log.Debug("CRD established", "name", crd.GetName())
	}
	log.Info("CRDs applied", "count", len(all))
	return nil
}

func applyCRD(ctx context.Context, client dynamic.NamespaceableResourceInterface, crd *unstructured.Unstructured) error {
	_, err := client.Create(ctx, crd, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating CRD %s: %w", crd.GetName(), err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := client.Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := crd.DeepCopy()
		next.SetResourceVersion(cur.GetResourceVersion())
		_, err = client.Update(ctx, next, metav1.UpdateOptions{FieldValidation: metav1.FieldValidationStrict})
		return err
	})
	if err != nil {
		return fmt.Errorf("updating CRD %s: %w", crd.GetName(), err)
	}
	return nil
}

// waitEstablished waits for the Established condition; a NamesAccepted
// condition that is False (a name clash with another CRD) fails at once.
func waitEstablished(ctx context.Context, client dynamic.NamespaceableResourceInterface, name string) error {
	for {
		cur, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("waiting for CRD %s: %w", name, err)
		}
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
			for _, x := range conds {
				m, _ := x.(map[string]any)
				switch {
				case m["type"] == "Established" && m["status"] == "True":
					return nil
				case m["type"] == "NamesAccepted" && m["status"] == "False":
					return fmt.Errorf("CRD %s: names not accepted: %v: %v", name, m["reason"], m["message"])
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for CRD %s to be established: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
