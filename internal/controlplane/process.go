package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one control plane process. A process this program started has
// cmd and done; one found through Open has only its PID and start time,
// which tell it apart from a recycled PID.
type proc struct {
	Name      string   `json:"name"`
	Args      []string `json:"args"`
	Log       string   `json:"log"`
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"` // /proc/PID/stat field 22

	cmd  *exec.Cmd
	done chan struct{} // closed when the child has been reaped
}

// start runs p.Args in its own process group (detached: its own session)
// with stdout and stderr
// appended to p.Log, in the program's network namespace. Unless
// detached, the kernel kills it when this program exits (so a killed test binary leaves no API server behind); a
// detached process outlives it.
func (p *proc) start(detached bool) error {
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the log of %s: %w", p.Name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== %s: %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(p.Args, " "))
	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if detached {
		// Its own session (and so process group), away from our terminal.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	onSpawner(func() { err = cmd.Start() })
	if err != nil {
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.cmd, p.PID, p.done = cmd, cmd.Process.Pid, make(chan struct{})
	if st, err := procStartTime(p.PID); err == nil {
		p.StartTime = st
	}
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.done)
	return nil
}

// spawner is a goroutine locked to its OS thread for good, which starts
// the processes: so they run in the program's own network namespace even
// when the caller's thread is switched into another, and Pdeathsig fires when the *thread* that forked
// the child exits, and Go ends a thread whose goroutine exits while locked
// (as network-namespace code does on purpose): a child forked from an
// ordinary goroutine could be killed whenever that happens to its thread.
var spawner struct {
	once sync.Once
	reqs chan func()
}

func onSpawner(fn func()) {
	spawner.once.Do(func() {
		spawner.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the program
			for f := range spawner.reqs {
				f()
			}
		}()
	})
	done := make(chan struct{})
	spawner.reqs <- func() {
		defer close(done)
		fn()
	}
	<-done
}

// exited reports whether the process is gone.
func (p *proc) exited() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	if p.PID <= 0 {
		return true
	}
	st, err := procStartTime(p.PID)
	return err != nil || st != p.StartTime || procState(p.PID) == 'Z'
}

// stop sends SIGTERM, waits up to grace, then SIGKILL, and waits until the
// process is gone. Only this PID is signalled.
func (p *proc) stop(grace time.Duration) error {
	if p == nil || p.PID <= 0 || p.exited() {
		return nil
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	if p.wait(grace) {
		return nil
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	if p.wait(30 * time.Second) {
		return nil
	}
	return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, p.PID)
}

func (p *proc) wait(d time.Duration) bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(d):
			return false
		}
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.exited() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p.exited()
}

// logTail returns the last lines of the process's log, for error messages.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procStartTime reads field 22 of /proc/PID/stat (counting from the last
// ')', since the command name may hold spaces).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("malformed /proc stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func procState(pid int) byte {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// freePort returns a TCP port on 127.0.0.1 nobody listens on right now.
// Another process may take it before ours binds it: callers retry on
// "address already in use".
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
