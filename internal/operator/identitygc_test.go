package operator

import (
	"fmt"
	"testing"
	"time"
)

func TestIdentityGCDue(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	g := &identityGC{timeout: 10 * time.Minute, now: func() time.Time { return now }, unusedSince: map[string]time.Time{}}
	old := now.Add(-time.Hour)
	all := []gcCandidate{
		{name: "100", created: old}, // used
		{name: "200", created: old}, // unused, old
		{name: "300", created: now}, // unused, just allocated
	}
	used := map[string]bool{"100": true}
	names := func(cs []gcCandidate) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.name)
		}
		return fmt.Sprint(s)
	}
	// First sight of an unused identity starts its clock: nothing is due.
	if d := g.due(all, used); len(d) != 0 {
		t.Fatalf("due at first pass: %s", names(d))
	}
	now = now.Add(9 * time.Minute)
	if d := g.due(all, used); len(d) != 0 {
		t.Fatalf("due before the timeout: %s", names(d))
	}
	// 300's endpoint gets published: it is used from now on.
	used["300"] = true
	now = now.Add(2 * time.Minute)
	if d := g.due(all, used); names(d) != "[200]" {
		t.Fatalf("due after the timeout: %s, want [200]", names(d))
	}
	// An identity unused again starts a new clock; a younger one waits
	// for its own age too.
	delete(used, "300")
	all = append(all, gcCandidate{name: "400", created: now.Add(-time.Minute)})
	if d := g.due(all, used); names(d) != "[200]" {
		t.Fatalf("due: %s, want [200] only", names(d))
	}
	now = now.Add(9*time.Minute + 30*time.Second)
	if d := g.due(all, used); names(d) != "[200]" {
		t.Fatalf("due: %s, want [200] only (400 is 10.5 minutes old but unused for 9.5)", names(d))
	}
	now = now.Add(time.Minute)
	if d := g.due(all, used); names(d) != "[200 300 400]" {
		t.Fatalf("due: %s, want [200 300 400]", names(d))
	}
	// Identities that disappeared are forgotten.
	g.due(all[:1], used)
	if len(g.unusedSince) != 0 {
		t.Fatalf("bookkeeping kept %v", g.unusedSince)
	}
}
