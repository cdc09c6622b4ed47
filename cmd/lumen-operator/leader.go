package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/lumen-net/lumen/internal/k8s"
)

// leaderFlags: with several replicas (the Helm chart's Deployment) only
// the holder of a Lease runs the operator's jobs, as Cilium's operator.
type leaderFlags struct {
	enabled             bool
	namespace, name     string
	lease, renew, retry time.Duration
	leading             atomic.Bool
}

func (l *leaderFlags) flags(fs *pflag.FlagSet) {
	fs.BoolVar(&l.enabled, "leader-elect", false, "run the jobs only while holding a Lease (for more than one replica)")
	fs.StringVar(&l.namespace, "leader-election-namespace", "kube-system", "namespace of the Lease")
	fs.StringVar(&l.name, "leader-election-lease-name", "lumen-operator-resource-lock", "name of the Lease")
	fs.DurationVar(&l.lease, "leader-election-lease-duration", 15*time.Second, "how long a Lease holds without renewal")
	fs.DurationVar(&l.renew, "leader-election-renew-deadline", 10*time.Second, "how long the leader retries renewing before it gives up")
	fs.DurationVar(&l.retry, "leader-election-retry-period", 2*time.Second, "time between tries")
}

func (l *leaderFlags) validate() error {
	if !l.enabled {
		return nil
	}
	if l.namespace == "" || l.name == "" {
		return fmt.Errorf("leader-election-namespace, leader-election-lease-name: invalid value %q/%q: want both set", l.namespace, l.name)
	}
	if l.renew >= l.lease || l.retry >= l.renew || l.retry <= 0 {
		return fmt.Errorf("leader-election durations: invalid values %v/%v/%v: want lease > renew-deadline > retry-period > 0", l.lease, l.renew, l.retry)
	}
	return nil
}

// whileLeader runs job while this process holds the Lease; losing it ends
// the process with an error (a new term starts from a fresh process, whose
// jobs rebuild their state from the API server).
func (l *leaderFlags) whileLeader(ctx context.Context, c *k8s.Clients, log *slog.Logger, job func(context.Context) error) error {
	if !l.enabled {
		return job(ctx)
	}
	id, err := os.Hostname()
	if err != nil {
		return err
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	id += "_" + hex.EncodeToString(r[:])
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: l.namespace, Name: l.name},
		Client:     c.Core.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	jobErr := make(chan error, 1)
	lost := errors.New("lost the leader lease")
	var result error
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: l.lease, RenewDeadline: l.renew, RetryPeriod: l.retry,
		ReleaseOnCancel: true, Name: "lumen-operator",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				l.leading.Store(true)
				log.Info("leading", "lease", l.namespace+"/"+l.name, "identity", id)
				jobErr <- job(ctx)
			},
			OnStoppedLeading: func() {
				l.leading.Store(false)
				if ctx.Err() == nil {
					result = lost
				}
			},
			OnNewLeader: func(who string) {
				if who != id {
					log.Info("another replica leads", "leader", who)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx) // returns when ctx ends or the lease is lost
	select {
	case err := <-jobErr:
		if result == nil {
			result = err
		}
	default:
	}
	return result
}
