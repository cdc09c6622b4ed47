package k8s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/policy"
)

// Policy objects from the API server passed only the CRD schema (or the
// NetworkPolicy API's validation): Lumen may not implement all of what they
// say. They are never skipped (the pods they select would run unprotected,
// and an update adding such a field would silently leave the old version in
// force): the policy syncer decodes them leniently and the parts it cannot
// enforce fail closed (policy.DecodeLenient). The object says so: a status
// condition (CNP/CCNP) and a Warning Event naming the fields.
const (
	// ConditionEnforced is the condition type Lumen writes in
	// status.conditions: False while parts of the policy are not enforced
	// as written.
	ConditionEnforced = "Enforced"
	// Condition reasons and the Event reason.
	ReasonUnsupportedField    = "UnsupportedField"
	ReasonInvalidField        = "InvalidField"
	ReasonEnforced            = "Enforced"
	EventPolicyNotEnforced    = "PolicyNotFullyEnforced"
	policyReportingController = "lumen.io/agent"
)

// policyKindNames are the kinds converted leniently.
var policyKindNames = map[string]bool{"NetworkPolicy": true, "CiliumNetworkPolicy": true, "CiliumClusterwideNetworkPolicy": true}

// PolicyProblem is what Lumen cannot enforce in one policy object.
type PolicyProblem struct {
	Reason  string // ReasonUnsupportedField or ReasonInvalidField
	Message string // every field path with what is wrong, "; "-separated
	Fields  []string
}

// policyProblem decodes a converted policy object as the syncer does and
// returns what it cannot enforce (nil: nothing).
func policyProblem(storeValue []byte) *PolicyProblem {
	p, err := policy.DecodeLenient(storeValue)
	if err == nil {
		return nil
	}
	pr := &PolicyProblem{Reason: ReasonUnsupportedField}
	var de *policy.DecodeError
	if !errors.As(err, &de) {
		return &PolicyProblem{Reason: ReasonInvalidField, Message: err.Error()}
	}
	var msgs []string
	for _, fe := range de.Errs {
		if !policy.Unsupported(fe) {
			pr.Reason = ReasonInvalidField
		}
		pr.Fields = append(pr.Fields, fe.Path)
		msgs = append(msgs, fe.Error())
	}
	what := "not fully enforced, the parts named deny (fail closed)"
	if p == nil {
		what = "not enforced at all"
	}
	pr.Message = what + ": " + strings.Join(msgs, "; ")
	return pr
}

// policyKV converts a policy object and reports its problems on it.
func (s *Store) policyKV(gvr schema.GroupVersionResource) converter {
	return func(u *unstructured.Unstructured) ([]kvstore.KV, error) {
		kvs, err := resourceKV(s.opts.Kinds)(u)
		if err != nil {
			return nil, err
		}
		if s.reporter != nil {
			s.reporter.enqueue(gvr, u, policyProblem(kvs[0].Value))
		}
		return kvs, nil
	}
}

// policyReporter writes conditions and events from a goroutine of its own
// (informer handlers must not block), latest state per object.
type policyReporter struct {
	c   *Clients
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]report
	kick    chan struct{}
}

type report struct {
	gvr     schema.GroupVersionResource
	obj     *unstructured.Unstructured
	problem *PolicyProblem
}

func newPolicyReporter(ctx context.Context, c *Clients, log *slog.Logger) *policyReporter {
	r := &policyReporter{c: c, log: log, pending: map[string]report{}, kick: make(chan struct{}, 1)}
	go r.run(ctx)
	return r
}

func (r *policyReporter) enqueue(gvr schema.GroupVersionResource, u *unstructured.Unstructured, pr *PolicyProblem) {
	if pr == nil && conditionOf(u) == nil {
		return // fine, and never said otherwise: nothing to write
	}
	r.mu.Lock()
	r.pending[gvr.Resource+"/"+objKey(u)] = report{gvr, u.DeepCopy(), pr}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *policyReporter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		r.mu.Lock()
		todo := r.pending
		r.pending = map[string]report{}
		r.mu.Unlock()
		for key, rep := range todo {
			if err := r.write(ctx, rep); err != nil && ctx.Err() == nil {
				r.log.Warn("cannot report policy status", "object", key, "err", err)
				// Retry later unless a newer version is pending.
				r.mu.Lock()
				if _, newer := r.pending[key]; !newer {
					r.pending[key] = rep
				}
				r.mu.Unlock()
				time.AfterFunc(2*time.Second, func() {
					select {
					case r.kick <- struct{}{}:
					default:
					}
				})
			}
		}
	}
}

// conditionOf returns the object's Enforced condition, if any.
func conditionOf(u *unstructured.Unstructured) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == ConditionEnforced {
			return m
		}
	}
	return nil
}

func (r *policyReporter) write(ctx context.Context, rep report) error {
	u, pr := rep.obj, rep.problem
	want := map[string]any{
		"type": ConditionEnforced, "status": string(metav1.ConditionTrue), "reason": ReasonEnforced,
		"message": "every rule is enforced as written", "observedGeneration": u.GetGeneration(),
	}
	if pr != nil {
		want["status"], want["reason"], want["message"] = string(metav1.ConditionFalse), pr.Reason, pr.Message
	}
	// NetworkPolicy has no status to write: the event says it.
	if rep.gvr.Group == Group {
		cur := conditionOf(u)
		same := cur != nil && cur["status"] == want["status"] && cur["reason"] == want["reason"] &&
			cur["message"] == want["message"] && fmt.Sprint(cur["observedGeneration"]) == fmt.Sprint(want["observedGeneration"])
		if !same {
			want["lastTransitionTime"] = time.Now().UTC().Format(time.RFC3339)
			if cur != nil && cur["status"] == want["status"] {
				if t, ok := cur["lastTransitionTime"].(string); ok {
					want["lastTransitionTime"] = t
				}
			}
			patch := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
				"metadata": map[string]any{"name": u.GetName(), "namespace": u.GetNamespace()},
				"status":   map[string]any{"conditions": []any{want}},
			}}
			if u.GetNamespace() == "" {
				unstructured.RemoveNestedField(patch.Object, "metadata", "namespace")
			}
			_, err := r.c.Dynamic.Resource(rep.gvr).Namespace(u.GetNamespace()).ApplyStatus(ctx, u.GetName(), patch,
				metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("writing status: %w", err)
			}
		}
	}
	if pr == nil {
		return nil
	}
	return r.event(ctx, u, pr)
}

// event creates the Warning Event of this version of the object. Its name
// is derived from the object, its generation and the message, so that every
// agent reporting the same problem creates the same Event (the others get
// AlreadyExists).
func (r *policyReporter) event(ctx context.Context, u *unstructured.Unstructured, pr *PolicyProblem) error {
	ns := u.GetNamespace()
	if ns == "" {
		ns = metav1.NamespaceDefault // cluster-scoped objects' events, as kubectl looks for them
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%s", u.GetUID(), u.GetGeneration(), pr.Message)))
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%.200s.lumen-%s", u.GetName(), hex.EncodeToString(h[:8])), Namespace: ns},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Name: u.GetName(), Namespace: u.GetNamespace(),
			UID: u.GetUID(), ResourceVersion: u.GetResourceVersion(),
		},
		Reason:              EventPolicyNotEnforced,
		Message:             truncate(pr.Message, 1024),
		Type:                corev1.EventTypeWarning,
		Source:              corev1.EventSource{Component: "lumen-agent"},
		ReportingController: policyReportingController,
		ReportingInstance:   "lumen-agent",
		Action:              "Enforce",
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
	}
	_, err := r.c.Core.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating event: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
