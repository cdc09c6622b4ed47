package lab

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/testutil"
)

func TestStartDetachedInNamespace(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns := testNS(t, "proc")
	logPath := filepath.Join(t.TempDir(), "logs", "sleep.log")
	p, err := StartDetached(ns, logPath, []string{"/bin/sh", "-c", "echo started; exec sleep 300"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(time.Second) })
	if !p.Alive() {
		t.Fatal("process not alive after start")
	}
	// Its output goes to the log.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.LogTail(5), "started") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.LogTail(5), "started") {
		t.Errorf("log tail = %q", p.LogTail(5))
	}
	if !p.InNS(ns) {
		t.Error("process is not in the namespace it was started in")
	}
	// The caller stays in the host namespace.
	host, _ := nsInode("/proc/self/ns/net")
	thread, _ := nsInode("/proc/thread-self/ns/net")
	if host != thread {
		t.Error("calling thread left in another namespace")
	}
	// Its own session: it does not die with our process group.
	sid, _ := os.ReadFile(filepath.Join("/proc", itoa(p.PID), "stat"))
	if f := strings.Fields(string(sid[strings.LastIndexByte(string(sid), ')')+1:])); len(f) < 4 || f[3] != itoa(p.PID) {
		t.Errorf("process is not a session leader: %v", f)
	}

	// A record with another start time (a recycled PID) is not this process
	// and must not be signalled.
	impostor := *p
	impostor.StartTime++
	if impostor.Alive() {
		t.Error("record with a different start time reported alive")
	}
	if err := impostor.Stop(time.Second); err != nil || !p.Alive() {
		t.Fatalf("stopping a stale record killed the process (err %v)", err)
	}

	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("process alive after Stop")
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	testutil.RequirePrivileged(t)
	p, err := StartDetached("", filepath.Join(t.TempDir(), "trap.log"), []string{"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(0) })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.LogTail(1), "ready") {
		if time.Now().After(deadline) {
			t.Fatal("shell never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("process ignoring SIGTERM survived Stop")
	}
}

func TestStartDetachedErrors(t *testing.T) {
	if _, err := StartDetached("", filepath.Join(t.TempDir(), "x.log"), []string{"/nonexistent/binary"}); err == nil {
		t.Error("starting a missing binary succeeded")
	}
	if (*Proc)(nil).Alive() || (&Proc{}).Alive() {
		t.Error("empty record alive")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
