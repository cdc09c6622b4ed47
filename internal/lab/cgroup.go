package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Each lab node gets a cgroup v2 directory of its own, below a directory of
// the lab (never the hierarchy's root): its agent attaches the socket
// load-balancing programs there, and the node's pods, and commands run "on"
// the node, live in it.

func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", errors.New("no cgroup2 filesystem mounted")
}

// LabCgroup is the lab's cgroup directory.
func LabCgroup(lab string) (string, error) {
	root, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "lumen-lab-"+lab), nil
}

// NodeCgroup is a node's cgroup directory.
func NodeCgroup(lab, node string) (string, error) {
	dir, err := LabCgroup(lab)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, node), nil
}

// JoinCgroup moves the calling process into the cgroup dir (so that its
// sockets are subject to that node's socket load balancing).
func JoinCgroup(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("joining cgroup %s: %w", dir, err)
	}
	return nil
}

// removeCgroups removes the lab's cgroup directories once their processes
// are gone (the kernel refuses to remove a cgroup with members).
func removeCgroups(lab string) error {
	dir, err := LabCgroup(lab)
	if err != nil {
		return nil
	}
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return nil
	}
	subs, _ := os.ReadDir(dir)
	var last error
	for try := 0; try < 50; try++ {
		last = nil
		for _, s := range subs {
			if s.IsDir() {
				if err := os.Remove(filepath.Join(dir, s.Name())); err != nil && !os.IsNotExist(err) {
					last = err
				}
			}
		}
		if last == nil {
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
				last = err
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("removing cgroup %s: %w", dir, last)
}
