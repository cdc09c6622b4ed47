// Package testutil holds helpers shared by the privileged tests.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
)

// InCI reports whether the tests run in CI, where a missing capability is a failure.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequirePrivileged skips the test when it cannot run as root, except in CI
// (CI=true), where running without privileges is a failure.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatalf("privileged test needs root (CI=true, so not skipping)")
	}
	t.Skip("needs root")
}

// Skip skips the test with reason, except in CI where it fails.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("cannot run in CI: %s", reason)
	}
	t.Skip(reason)
}

// Suffix returns a short random suffix for names of test namespaces and devices.
func Suffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
