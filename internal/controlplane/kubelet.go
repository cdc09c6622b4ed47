package controlplane

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// There is no kubelet: these helpers write what it would, so that the
// controllers (EndpointSlices, topology hints) treat the objects as real.

// Labels RegisterNode puts on a Node.
const (
	HostnameLabel = "kubernetes.io/hostname"
	ZoneLabel     = "topology.kubernetes.io/zone"
	OSLabel       = "kubernetes.io/os"
)

// RegisterNode creates (or updates) Node name as a kubelet would: labels
// kubernetes.io/hostname, kubernetes.io/os and, when zone is set,
// topology.kubernetes.io/zone; status with the addresses ips as
// InternalIP, allocatable CPU, memory and pods, and Ready=True. Topology
// hints need every Node to look like this. Labels already on the Node are
// kept.
func RegisterNode(ctx context.Context, cs kubernetes.Interface, name, zone string, ips ...netip.Addr) error {
	labels := map[string]string{HostnameLabel: name, OSLabel: "linux"}
	if zone != "" {
		labels[ZoneLabel] = zone
	}
	nodes := cs.CoreV1().Nodes()
	_, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("registering node %s: %w", name, err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		changed := false
		for k, v := range labels {
			if n.Labels[k] != v {
				n.Labels[k], changed = v, true
			}
		}
		if changed {
			if n, err = nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		now := metav1.Now()
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
		for _, ip := range ips {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
		}
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("2"),
			corev1.ResourceMemory: resource.MustParse("4Gi"),
			corev1.ResourcePods:   resource.MustParse("110"),
		}
		n.Status.Capacity, n.Status.Allocatable = capacity, capacity
		n.Status.Phase = corev1.NodeRunning
		n.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "registered by Lumen (no kubelet)", LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("registering node %s: %w", name, err)
	}
	return nil
}

// MarkPodReady sets the status of Pod ns/name as a kubelet would once its
// containers run: phase Running, pod IPs ips (primary first, at least
// one), host IPs from its Node's InternalIPs, conditions PodScheduled,
// Initialized, ContainersReady and Ready True, and every container
// running and ready. The Pod must have spec.nodeName: the EndpointSlice
// controller takes the endpoint's node and zone from it.
func MarkPodReady(ctx context.Context, cs kubernetes.Interface, ns, name string, ips ...netip.Addr) error {
	if len(ips) == 0 {
		return fmt.Errorf("marking pod %s/%s ready: no pod IP given", ns, name)
	}
	return setPodStatus(ctx, cs, ns, name, true, ips)
}

// MarkPodNotReady turns the Ready and ContainersReady conditions of Pod
// ns/name False (a failing readiness probe), keeping its IPs: the
// EndpointSlice controller then lists it with ready=false.
func MarkPodNotReady(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	return setPodStatus(ctx, cs, ns, name, false, nil)
}

func setPodStatus(ctx context.Context, cs kubernetes.Interface, ns, name string, ready bool, ips []netip.Addr) error {
	verb := "ready"
	if !ready {
		verb = "not ready"
	}
	pods := cs.CoreV1().Pods(ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.Spec.NodeName == "" {
			return fmt.Errorf("spec.nodeName is empty: the pod must be bound to a node")
		}
		now := metav1.Now()
		st := &pod.Status
		if ips != nil {
			st.PodIPs = nil
			for _, ip := range ips {
				st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
			}
			st.PodIP = st.PodIPs[0].IP
			if node, err := cs.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{}); err == nil {
				st.HostIPs = nil
				for _, a := range node.Status.Addresses {
					if a.Type == corev1.NodeInternalIP {
						st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: a.Address})
					}
				}
				if len(st.HostIPs) > 0 {
					st.HostIP = st.HostIPs[0].IP
				}
			}
		}
		st.Phase = corev1.PodRunning
		if st.StartTime == nil {
			st.StartTime = &now
		}
		cond := corev1.ConditionFalse
		if ready {
			cond = corev1.ConditionTrue
		}
		setCondition(st, corev1.PodScheduled, corev1.ConditionTrue, now)
		setCondition(st, corev1.PodInitialized, corev1.ConditionTrue, now)
		setCondition(st, corev1.ContainersReady, cond, now)
		setCondition(st, corev1.PodReady, cond, now)
		st.ContainerStatuses = nil
		for _, c := range pod.Spec.Containers {
			started := true
			st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready, Started: &started,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *st.StartTime}},
			})
		}
		_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("marking pod %s/%s %s: %w", ns, name, verb, err)
	}
	return nil
}

func setCondition(st *corev1.PodStatus, typ corev1.PodConditionType, status corev1.ConditionStatus, now metav1.Time) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			if st.Conditions[i].Status != status {
				st.Conditions[i].Status, st.Conditions[i].LastTransitionTime = status, now
			}
			st.Conditions[i].LastProbeTime = metav1.Time{}
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: typ, Status: status, LastTransitionTime: now})
}
