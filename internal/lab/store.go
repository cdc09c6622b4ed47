package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
)

// pingStore checks that the store at url answers.
func pingStore(ctx context.Context, url string) error {
	c, err := kvstore.Dial(ctx, url)
	if err != nil {
		return err
	}
	return c.Close()
}

// writeResources stores the topology's Namespace and Pod objects, as
// `lumen apply` would, so that agents know the pods' labels and nodes.
func writeResources(ctx context.Context, st *State, t *Topology) error {
	objs, err := topologyObjects(t)
	if err != nil {
		return err
	}
	c, err := kvstore.Dial(ctx, st.StoreURL)
	if err != nil {
		return fmt.Errorf("connecting to the store: %w", err)
	}
	defer c.Close()
	reg, err := labKinds()
	if err != nil {
		return err
	}
	if _, err := reg.Apply(ctx, c, objs); err != nil {
		return fmt.Errorf("storing pods and namespaces: %w", err)
	}
	return nil
}

// labKinds are the kinds the lab writes itself: Namespaces and Pods.
func labKinds() (*resource.Registry, error) { return resource.NewRegistry(resource.CoreKinds()...) }

// topologyObjects turns the topology into Namespace and Pod objects: one
// namespace per pod namespace, and per pod one container serving its ports.
func topologyObjects(t *Topology) ([]resource.Object, error) {
	nsSet := map[string]bool{}
	for _, p := range t.Pods {
		nsSet[p.Namespace] = true
	}
	namespaces := make([]string, 0, len(nsSet))
	for ns := range nsSet {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	var objs []resource.Object
	for _, ns := range namespaces {
		objs = append(objs, resource.Object{APIVersion: "v1", Kind: "Namespace", Metadata: resource.Metadata{Name: ns}})
	}
	for _, p := range t.Pods {
		ports := make([]resource.ContainerPort, 0, len(p.Ports))
		for _, port := range p.Ports {
			ports = append(ports, resource.ContainerPort{Name: port.Name, ContainerPort: int32(port.Port), Protocol: strings.ToUpper(port.Protocol)})
		}
		spec, err := json.Marshal(resource.PodSpec{
			NodeName:   p.Node,
			Containers: []resource.Container{{Name: "echo", Image: "lumen-lab-echo", Ports: ports}},
		})
		if err != nil {
			return nil, err
		}
		objs = append(objs, resource.Object{
			APIVersion: "v1",
			Kind:       "Pod",
			Metadata:   resource.Metadata{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels},
			Spec:       spec,
		})
	}
	reg, err := labKinds()
	if err != nil {
		return nil, err
	}
	for i := range objs {
		if err := reg.Validate(&objs[i]); err != nil {
			return nil, fmt.Errorf("topology as Kubernetes objects: %w", err)
		}
	}
	return objs, nil
}
