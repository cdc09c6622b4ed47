package lab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// Proc is a detached lab process, identified by PID and start time so that a
// recycled PID is never mistaken for it.
type Proc struct {
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"` // clock ticks since boot (/proc/PID/stat field 22)
	Args      []string `json:"args"`
	NetNS     string   `json:"netns,omitempty"`
	Log       string   `json:"log"`
}

// StartDetached starts args[0] in its own session with stdin on /dev/null and
// stdout and stderr appended to logPath. When nsName is set, the process is
// started from a thread switched into that namespace, so it lives there. The
// process outlives the caller.
func StartDetached(nsName, logPath string, args []string) (*Proc, error) {
	return StartDetachedIn(nsName, "", logPath, args)
}

// StartDetachedIn is StartDetached with the process placed in the cgroup v2
// directory cgroupDir from its start (when set).
func StartDetachedIn(nsName, cgroupDir, logPath string, args []string) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("creating log dir: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cgroupDir != "" {
		cg, err := os.Open(cgroupDir)
		if err != nil {
			return nil, fmt.Errorf("opening cgroup %s: %w", cgroupDir, err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	start := func() error { return cmd.Start() }
	if nsName != "" {
		err = InNamedNS(nsName, start)
	} else {
		err = start()
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", strings.Join(args, " "), err)
	}
	p := &Proc{PID: cmd.Process.Pid, Args: args, NetNS: nsName, Log: logPath}
	st, err := readStat(p.PID)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("reading state of %s (pid %d): %w", args[0], p.PID, err)
	}
	p.StartTime = st.startTime
	// Reap the child if it dies while we are still running; after we exit
	// it belongs to init.
	go func() { _ = cmd.Wait() }()
	return p, nil
}

type procStat struct {
	state     byte
	startTime uint64
}

// readStat parses /proc/PID/stat. The command name may hold spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("malformed stat: too few fields")
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat: starttime %q", f[19])
	}
	return procStat{state: f[0][0], startTime: st}, nil
}

// Alive reports whether the recorded process still runs (a zombie does not).
func (p *Proc) Alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	st, err := readStat(p.PID)
	if err != nil || st.startTime != p.StartTime {
		return false
	}
	return st.state != 'Z' && st.state != 'X'
}

// Signal sends sig to the recorded process if it is still that process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return nil
	}
	if err := unix.Kill(p.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling pid %d: %w", p.PID, err)
	}
	return nil
}

// Stop asks the process to exit (SIGTERM), kills it after grace and waits
// until it is gone.
func (p *Proc) Stop(grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.waitGone(grace) {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if p.waitGone(10 * time.Second) {
		return nil
	}
	return fmt.Errorf("pid %d (%s) did not exit after SIGKILL", p.PID, filepath.Base(p.Args[0]))
}

func (p *Proc) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !p.Alive() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// InNS reports whether the process's network namespace is the named one.
func (p *Proc) InNS(nsName string) bool {
	want, err := nsInode(labpath.NSPath(nsName))
	if err != nil {
		return false
	}
	got, err := nsInode(fmt.Sprintf("/proc/%d/ns/net", p.PID))
	return err == nil && got == want
}

// LogTail returns the last lines of the process's log, for error messages.
func (p *Proc) LogTail(lines int) string {
	return tail(p.Log, lines)
}

func tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var buf []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		buf = append(buf, sc.Text())
		if len(buf) > lines {
			buf = buf[1:]
		}
	}
	return strings.Join(buf, "\n")
}
