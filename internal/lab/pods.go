package lab

// The lab's pods: CNI configuration and ADD, and their echo servers.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"k8s.io/client-go/kubernetes"

	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// writeCNIConfig writes the node's conflist, as a runtime on that node would have it.
func writeCNIConfig(st *State, n *NodeState) (string, error) {
	dir := labpath.NodeCNIConfDir(st.Name, n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating CNI config dir: %w", err)
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "lumen",
		"plugins": []any{map[string]any{
			"type":        CNIBinary,
			"agentSocket": n.Socket,
			"logFile":     filepath.Join(labpath.LogDir(st.Name), "cni-"+n.Name+".log"),
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "10-lumen.conflist")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", fmt.Errorf("writing CNI config: %w", err)
	}
	return path, nil
}

// addPods creates, plugs in and starts every pod.
func addPods(ctx context.Context, st *State, t *Topology, log *slog.Logger) error {
	confs := map[string]*libcni.NetworkConfigList{}
	for i := range st.Nodes {
		path, err := writeCNIConfig(st, &st.Nodes[i])
		if err != nil {
			return err
		}
		list, err := libcni.ConfListFromFile(path)
		if err != nil {
			return fmt.Errorf("loading %s: %w", path, err)
		}
		confs[st.Nodes[i].Name] = list
	}
	sctpOK := SCTPSupported()
	var kube kubernetes.Interface
	if st.K8s != nil {
		var err error
		if kube, err = st.Kube(); err != nil {
			return err
		}
	}
	for _, tp := range t.Pods {
		node, err := st.Node(tp.Node)
		if err != nil {
			return err
		}
		st.Pods = append(st.Pods, PodState{
			Name:        tp.Name,
			Namespace:   tp.Namespace,
			Node:        tp.Node,
			Labels:      tp.Labels,
			Ports:       tp.Ports,
			NetNS:       labpath.PodNS(st.Name, tp.Node, tp.Name),
			ContainerID: ContainerID(st.Name, tp.Namespace, tp.Name),
		})
		pod := &st.Pods[len(st.Pods)-1]
		if err := st.save(); err != nil {
			return err
		}
		log.Info("adding pod", "pod", pod.FullName(), "node", pod.Node, "netns", pod.NetNS)
		if err := CreateNS(pod.NetNS); err != nil {
			return err
		}
		if err := podLoUp(pod.NetNS); err != nil {
			return fmt.Errorf("pod %s: %w", pod.FullName(), err)
		}
		if kube != nil {
			if err := createPod(ctx, kube, pod); err != nil {
				return err
			}
		}
		if err := cniAdd(ctx, st, node, pod, confs[node.Name]); err != nil {
			return fmt.Errorf("pod %s: %w", pod.FullName(), err)
		}
		if WantsXDPPeers(st.AgentArgs) { // complete checksums for XDP, see xdp.go
			if err := txChecksumOff(pod.NetNS, PodInterface); err != nil {
				return fmt.Errorf("pod %s: %w", pod.FullName(), err)
			}
		}
		if kube != nil {
			if err := markPodReady(ctx, kube, pod); err != nil {
				return fmt.Errorf("pod %s: %w", pod.FullName(), err)
			}
		}
		if err := st.save(); err != nil {
			return err
		}
		cfg := ServeConfigFor(pod.Ports)
		if len(cfg.SCTP) > 0 && !sctpOK {
			log.Warn("SCTP ports will not be served: "+ErrSCTPUnsupported.Error(), "pod", pod.FullName(), "sctp", JoinPorts(cfg.SCTP))
		}
		args := append([]string{st.Lumen, "lab", "serve"}, cfg.Args()...)
		p, err := StartDetachedIn(pod.NetNS, node.Cgroup, filepath.Join(labpath.LogDir(st.Name), "serve-"+pod.Namespace+"-"+pod.Name+".log"), args)
		if err != nil {
			return fmt.Errorf("pod %s: echo server: %w", pod.FullName(), err)
		}
		pod.Server = p
		if err := st.save(); err != nil {
			return err
		}
	}
	// The servers bind quickly; make sure they did before declaring the lab up.
	for i := range st.Pods {
		pod := &st.Pods[i]
		if err := waitServing(ctx, pod); err != nil {
			return fmt.Errorf("pod %s: %w", pod.FullName(), err)
		}
	}
	return nil
}

// waitServing waits for the pod's echo server to listen on its TCP ports (or
// its UDP ports when it has no TCP port), checked from inside the pod.
func waitServing(ctx context.Context, pod *PodState) error {
	return waitFor(ctx, 30*time.Second, pod.Server, "echo server", func(ctx context.Context) error {
		for _, p := range pod.Ports {
			if p.Protocol != ProtoTCP {
				continue
			}
			err := InNamedNS(pod.NetNS, func() error {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port), time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func podLoUp(nsName string) error {
	h, err := nlHandle(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	return linkUp(h, "lo")
}

// cniAdd plugs a pod in by running the CNI ADD of the node's conflist from a
// thread in the node's namespace, as the node's runtime would.
func cniAdd(ctx context.Context, st *State, node *NodeState, pod *PodState, list *libcni.NetworkConfigList) error {
	cfg := libcni.NewCNIConfigWithCacheDir([]string{st.BinDir}, labpath.NodeCNICacheDir(st.Name, node.Name), nil)
	rt := runtimeConf(pod)
	var res cnitypes.Result
	err := InNamedNS(node.NetNS, func() error {
		var err error
		res, err = cfg.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		return fmt.Errorf("CNI ADD: %w", err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("CNI ADD: reading result: %w", err)
	}
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			pod.IPv4 = ip.Address.IP.String()
		} else {
			pod.IPv6 = ip.Address.IP.String()
		}
	}
	if pod.IPv4 == "" || pod.IPv6 == "" {
		return fmt.Errorf("CNI ADD: result has no IPv4 and IPv6 address: %v", r.IPs)
	}
	return nil
}

func runtimeConf(pod *PodState) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: pod.ContainerID,
		NetNS:       labpath.NSPath(pod.NetNS),
		IfName:      PodInterface,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", pod.ContainerID},
		},
	}
}
