package labtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/testutil"
)

// binDir holds the binaries built for this test run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Without root every test skips (or fails in CI) before needing them.
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "lumen-labtest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/lumen", "./cmd/lumen-agent", "./cmd/lumen-cni", "./cmd/lumen-operator")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building the binaries:", err)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// result is one lumen invocation.
type result struct {
	stdout, stderr string
	code           int
}

// lumen runs the lumen binary against a lab.
func lumen(t *testing.T, labName string, args ...string) result {
	t.Helper()
	return lumenStdin(t, labName, "", args...)
}

func lumenStdin(t *testing.T, labName, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "lumen"), append([]string{"--lab", labName}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running lumen %v: %v", args, err)
	}
	return r
}

// mustLumen runs lumen and fails the test when it does not exit 0.
func mustLumen(t *testing.T, labName string, args ...string) string {
	t.Helper()
	r := lumen(t, labName, args...)
	if r.code != 0 {
		t.Fatalf("lumen %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// newLab returns a unique lab name whose lab is torn down at the end of the test.
func newLab(t *testing.T) string {
	t.Helper()
	testutil.RequirePrivileged(t)
	name := "t" + testutil.Suffix()
	t.Cleanup(func() {
		if r := lumen(t, name, "lab", "down"); r.code != 0 {
			t.Errorf("lab down: exit %d: %s", r.code, r.stderr)
		}
	})
	return name
}

// writeTopology writes a topology file for the test.
func writeTopology(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "topology.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// up builds a lab and returns its status.
func up(t *testing.T, labName, topologyFile string, extra ...string) *lab.Report {
	t.Helper()
	args := append([]string{"lab", "up", "-f", topologyFile}, extra...)
	r := lumen(t, labName, args...)
	if r.code != 0 {
		t.Fatalf("lab up: exit %d\nstdout:\n%s\nstderr:\n%s%s", r.code, r.stdout, r.stderr, labLogs(labName))
	}
	return status(t, labName)
}

// labLogs returns the lab's process logs, for failure messages.
func labLogs(labName string) string {
	files, _ := filepath.Glob(filepath.Join(labpath.LogDir(labName), "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(&b, "\n--- %s ---\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

func status(t *testing.T, labName string) *lab.Report {
	t.Helper()
	var r lab.Report
	decode(t, mustLumen(t, labName, "lab", "status", "-o", "json"), &r)
	return &r
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
}

// waitUntil polls cond until it holds; the timeout only guards against hangs.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pidAlive reports whether pid runs (zombies do not count).
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
