package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Cgroup2Mount finds where the cgroup v2 hierarchy is mounted (by
// filesystem type: v1 hierarchies may be mounted beside it).
func Cgroup2Mount() (string, error) {
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

func (d *Datapath) sockHooks() map[string]struct {
	prog *ebpf.Program
	typ  ebpf.AttachType
} {
	type h = struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}
	p := d.sock.sockPrograms
	return map[string]h{
		"connect4":     {p.SockConnect4, ebpf.AttachCGroupInet4Connect},
		"sendmsg4":     {p.SockSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		"recvmsg4":     {p.SockRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
		"getpeername4": {p.SockGetpeername4, ebpf.AttachCgroupInet4GetPeername},
		"connect6":     {p.SockConnect6, ebpf.AttachCGroupInet6Connect},
		"sendmsg6":     {p.SockSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		"recvmsg6":     {p.SockRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg},
		"getpeername6": {p.SockGetpeername6, ebpf.AttachCgroupInet6GetPeername},
	}
}

// AttachSocketLB attaches the socket load-balancing programs to the cgroup
// v2 directory at path (creating it if it does not exist), with pinned
// links that a restarted agent updates in place.
func (d *Datapath) AttachSocketLB(path string) error {
	var st unix.Statfs_t
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("creating cgroup %s: %w", path, err)
	}
	if err := unix.Statfs(path, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("socket LB cgroup %s: not a cgroup v2 directory", path)
	}
	for name, h := range d.sockHooks() {
		pin := filepath.Join(d.opts.BPFFS, "links", "cgroup_"+name)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			err = l.Update(h.prog)
			l.Close()
			if err == nil {
				continue
			}
			_ = os.Remove(pin)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: h.typ, Program: h.prog})
		if err != nil {
			return fmt.Errorf("attaching %s to cgroup %s: %w", name, path, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pinning %s link: %w", name, err)
		}
	}
	return nil
}

// DetachSocketLB removes the socket load-balancing programs.
func (d *Datapath) DetachSocketLB() error {
	var errs []error
	for name := range d.sockHooks() {
		errs = append(errs, unpinLink(filepath.Join(d.opts.BPFFS, "links", "cgroup_"+name)))
	}
	return errors.Join(errs...)
}

// NetnsCookie returns the network namespace cookie of the calling thread's
// namespace (what bpf_get_netns_cookie returns for its sockets).
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("reading the netns cookie: %w", err)
	}
	return v, nil
}
