package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// StopStore stops a lab's store (the agents keep running without it).
func StopStore(lab string) error {
	unlock, err := lock(lab)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := LoadState(lab)
	if err != nil {
		return err
	}
	if st.Store == nil {
		return nil
	}
	if err := st.Store.Stop(10 * time.Second); err != nil {
		return fmt.Errorf("stopping the store of lab %s: %w", lab, err)
	}
	return nil
}

// StartStore starts a lab's store again, stopping it first if it runs. With
// wipe its data is removed first: the store comes back empty, as a store
// that lost its disk.
func StartStore(ctx context.Context, lab string, wipe bool, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	unlock, err := lock(lab)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := LoadState(lab)
	if err != nil {
		return err
	}
	if st.Store != nil && st.Store.Alive() {
		if err := st.Store.Stop(10 * time.Second); err != nil {
			return fmt.Errorf("stopping the store of lab %s: %w", lab, err)
		}
	}
	if wipe {
		if err := os.RemoveAll(labpath.StoreDir(lab)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("wiping the store of lab %s: %w", lab, err)
		}
	}
	_ = os.Remove(labpath.StoreSocket(lab))
	return startStore(ctx, st, log)
}

// AddPod adds a pod to a running lab as `up` adds the topology's: its Pod
// object in the store, its namespace, CNI ADD through the node's conflist,
// an echo server on its ports.
func AddPod(ctx context.Context, lab string, p Pod, log *slog.Logger) (*PodState, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	unlock, err := lock(lab)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := LoadState(lab)
	if err != nil {
		return nil, err
	}
	if _, err := st.Node(p.Node); err != nil {
		return nil, err
	}
	for _, have := range st.Pods {
		if have.Name == p.Name {
			return nil, fmt.Errorf("pod %s: already in lab %s", p.Name, lab)
		}
	}
	t := &Topology{Pods: []Pod{p}}
	if st.K8s == nil {
		if err := writeResources(ctx, st, t); err != nil {
			return nil, err
		}
	}
	n := len(st.Pods)
	if err := addPods(ctx, st, t, log); err != nil {
		return nil, err
	}
	return &st.Pods[n], nil
}

// WriteResources writes every pod's Namespace and Pod object to the store
// again, as up did (a store that came back empty gets its desired state).
func WriteResources(ctx context.Context, lab string) error {
	st, err := LoadState(lab)
	if err != nil {
		return err
	}
	t := &Topology{}
	for _, p := range st.Pods {
		t.Pods = append(t.Pods, Pod{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, Node: p.Node, Ports: p.Ports})
	}
	return writeResources(ctx, st, t)
}

// RestartAgentUntil restarts a node's agent like RestartAgent but waits for
// ready instead of a healthy status (e.g. an agent restarted while the
// store is down is degraded, yet must serve its endpoints).
func RestartAgentUntil(ctx context.Context, lab, node string, timeout time.Duration, ready func(*api.Status) error) (*Proc, error) {
	return restartAgent(ctx, lab, node, timeout, nil, ready)
}
