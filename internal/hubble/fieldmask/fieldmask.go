// Package fieldmask applies a GetFlowsRequest field mask: clients such as
// the hubble CLI ask only for the fields they print, which keeps streams
// small. Flows are shared and never modified: Apply builds a new flow that
// shares the selected sub-messages.
package fieldmask

import (
	"fmt"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// Mask is a compiled field mask; the zero value selects everything.
type Mask struct {
	root []*node
}

type node struct {
	fd       protoreflect.FieldDescriptor
	children []*node // nil: the whole field
}

var flowDesc = (&flowpb.Flow{}).ProtoReflect().Descriptor()

// New compiles a mask over flow.Flow; nil or empty selects everything.
func New(fm *fieldmaskpb.FieldMask) (*Mask, error) {
	m := &Mask{}
	for _, p := range fm.GetPaths() {
		if err := m.add(p); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Mask) add(path string) error {
	if path == "" {
		return fmt.Errorf("empty path")
	}
	nodes, desc := &m.root, flowDesc
	parts := strings.Split(path, ".")
	for i, name := range parts {
		if desc == nil {
			return fmt.Errorf("path %q: %q is not a message", path, strings.Join(parts[:i], "."))
		}
		fd := desc.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return fmt.Errorf("path %q: no field %q in %s", path, name, desc.FullName())
		}
		var n *node
		for _, c := range *nodes {
			if c.fd == fd {
				n = c
			}
		}
		last := i == len(parts)-1
		if n == nil {
			n = &node{fd: fd}
			if !last {
				n.children = []*node{}
			}
			*nodes = append(*nodes, n)
		} else if n.children == nil {
			return nil // the whole field is already selected
		}
		if last {
			n.children = nil
			return nil
		}
		desc = nil
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			desc = fd.Message()
		}
		nodes = &n.children
	}
	return nil
}

// Active reports whether the mask selects only some fields.
func (m *Mask) Active() bool { return m != nil && len(m.root) > 0 }

// Apply returns the flow reduced to the mask (f itself when inactive).
func (m *Mask) Apply(f *flowpb.Flow) *flowpb.Flow {
	if !m.Active() || f == nil {
		return f
	}
	out := &flowpb.Flow{}
	copyFields(out.ProtoReflect(), f.ProtoReflect(), m.root)
	return out
}

func copyFields(dst, src protoreflect.Message, nodes []*node) {
	for _, n := range nodes {
		if !src.Has(n.fd) {
			continue
		}
		if n.children == nil {
			dst.Set(n.fd, src.Get(n.fd))
			continue
		}
		sub := dst.Mutable(n.fd).Message()
		copyFields(sub, src.Get(n.fd).Message(), n.children)
	}
}
