package operator

import (
	"crypto/rand"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/lumen-net/lumen/internal/k8s"
)

// Slice modes, as Cilium 1.11's --ces-slice-mode.
const (
	// SliceModeFCFS puts an endpoint in any slice of its namespace with
	// room ("first come, first served").
	SliceModeFCFS = "fcfs"
	// SliceModeIdentity puts endpoints of the same identity (and
	// namespace) together, so an identity's endpoints change few slices.
	SliceModeIdentity = "identity"
)

// normalizeSliceMode returns the mode a --ces-slice-mode value names ("" if
// none): ours, or Cilium 1.11's names for them.
func normalizeSliceMode(m string) string {
	switch m {
	case SliceModeIdentity, "cesSliceModeIdentity":
		return SliceModeIdentity
	case SliceModeFCFS, "cesSliceModeFCFS":
		return SliceModeFCFS
	}
	return ""
}

// cepKey names a CiliumEndpoint.
type cepKey struct{ namespace, name string }

func (k cepKey) String() string { return k.namespace + "/" + k.name }

// groupKey is what endpoints sharing a slice have in common: the namespace,
// and in identity mode the identity.
type groupKey struct {
	namespace string
	identity  int64
}

// cesSlice is the desired content of one CiliumEndpointSlice and what the
// operator knows of its stored version.
type cesSlice struct {
	name      string
	group     groupKey
	endpoints map[string]k8s.CoreCiliumEndpoint // by CiliumEndpoint name
	// exists and resourceVersion describe the stored object.
	exists          bool
	resourceVersion string
	// retiring slices are empty and being deleted: no endpoint goes there.
	retiring bool
}

// sliceWrite is one write the batcher wants done.
type sliceWrite struct {
	Op              string // "create", "update" or "delete"
	Slice           k8s.CiliumEndpointSlice
	ResourceVersion string    // the version an update or delete expects ("" for a create)
	Since           time.Time // first change not yet written
}

// Write operations.
const (
	opCreate = "create"
	opUpdate = "update"
	opDelete = "delete"
)

// cesBatcher maps CiliumEndpoints to CiliumEndpointSlices and remembers
// which slices changed since they were last written. It does no I/O, and is
// not safe for concurrent use (the controller holds a lock).
type cesBatcher struct {
	mode     string
	max      int
	slices   map[string]*cesSlice
	groups   map[groupKey]map[string]*cesSlice // open (non-retiring) slices per group
	ceps     map[cepKey]string                 // endpoint -> slice name
	dirty    map[string]time.Time              // slice name -> first unwritten change
	now      func() time.Time
	nameFunc func() string
}

func newCESBatcher(mode string, maxPerSlice int) *cesBatcher {
	return &cesBatcher{
		mode: normalizeSliceMode(mode), max: maxPerSlice,
		slices:   map[string]*cesSlice{},
		groups:   map[groupKey]map[string]*cesSlice{},
		ceps:     map[cepKey]string{},
		dirty:    map[string]time.Time{},
		now:      time.Now,
		nameFunc: generateSliceName,
	}
}

// cesNameAlphabet is Cilium's: no vowels (no words), no ambiguous characters.
const cesNameAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// generateSliceName returns a name like Cilium's: ces-xxxxxxxxx-xxxxx.
func generateSliceName() string {
	b := make([]byte, 14)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = cesNameAlphabet[int(b[i])%len(cesNameAlphabet)]
	}
	return "ces-" + string(b[:9]) + "-" + string(b[9:])
}

func (b *cesBatcher) groupOf(namespace string, identity int64) groupKey {
	if b.mode == SliceModeIdentity {
		return groupKey{namespace, identity}
	}
	return groupKey{namespace: namespace}
}

// restore loads slices found in the API server (at start, before any
// endpoint event). An endpoint listed in several slices stays in the first
// (by name) and is removed from the others.
func (b *cesBatcher) restore(stored []k8s.CiliumEndpointSlice) {
	sort.Slice(stored, func(i, j int) bool { return stored[i].Name < stored[j].Name })
	for _, st := range stored {
		s := &cesSlice{name: st.Name, endpoints: map[string]k8s.CoreCiliumEndpoint{}, exists: true, resourceVersion: st.ResourceVersion}
		var identity int64
		if len(st.Endpoints) > 0 {
			identity = st.Endpoints[0].IdentityID
		}
		s.group = b.groupOf(st.Namespace, identity)
		b.slices[s.name] = s
		for _, ep := range st.Endpoints {
			key := cepKey{st.Namespace, ep.Name}
			if _, dup := b.ceps[key]; dup || ep.Name == "" {
				b.markDirty(s)
				continue
			}
			s.endpoints[ep.Name] = normalizeCore(ep)
			b.ceps[key] = s.name
		}
		if len(s.endpoints) == 0 {
			b.markDirty(s) // empty slices are deleted
		}
		b.open(s)
	}
}

// endpoints returns the endpoints the batcher holds (to prune those whose
// CiliumEndpoint no longer exists).
func (b *cesBatcher) endpoints() []cepKey {
	keys := make([]cepKey, 0, len(b.ceps))
	for k := range b.ceps {
		keys = append(keys, k)
	}
	return keys
}

// upsert places or updates an endpoint. It reports whether a slice changed.
func (b *cesBatcher) upsert(namespace string, ep k8s.CoreCiliumEndpoint) bool {
	ep = normalizeCore(ep)
	key := cepKey{namespace, ep.Name}
	if name, ok := b.ceps[key]; ok {
		s := b.slices[name]
		if s.group == b.groupOf(namespace, ep.IdentityID) {
			if old, ok := s.endpoints[ep.Name]; ok && reflect.DeepEqual(old, ep) {
				return false
			}
			s.endpoints[ep.Name] = ep
			b.markDirty(s)
			return true
		}
		// Identity mode: a new identity moves the endpoint.
		b.remove(key)
	}
	s := b.pick(b.groupOf(namespace, ep.IdentityID))
	s.endpoints[ep.Name] = ep
	b.ceps[key] = s.name
	b.markDirty(s)
	return true
}

// remove takes an endpoint out of its slice. It reports whether it was there.
func (b *cesBatcher) remove(key cepKey) bool {
	name, ok := b.ceps[key]
	if !ok {
		return false
	}
	delete(b.ceps, key)
	s := b.slices[name]
	delete(s.endpoints, key.name)
	b.markDirty(s)
	return true
}

// pick chooses the slice a new endpoint of group g goes to: a slice with
// room that is already due to be written (the change then costs no extra
// write), else the fullest slice with room (slices stay few and full), else
// a new slice.
func (b *cesBatcher) pick(g groupKey) *cesSlice {
	var best *cesSlice
	better := func(s *cesSlice) bool {
		if best == nil {
			return true
		}
		_, sd := b.dirty[s.name]
		_, bd := b.dirty[best.name]
		if sd != bd {
			return sd
		}
		if len(s.endpoints) != len(best.endpoints) {
			return len(s.endpoints) > len(best.endpoints)
		}
		return s.name < best.name
	}
	for _, s := range b.groups[g] {
		if len(s.endpoints) < b.max && better(s) {
			best = s
		}
	}
	if best != nil {
		return best
	}
	name := b.nameFunc()
	for b.slices[name] != nil {
		name = b.nameFunc()
	}
	s := &cesSlice{name: name, group: g, endpoints: map[string]k8s.CoreCiliumEndpoint{}}
	b.slices[name] = s
	b.open(s)
	return s
}

func (b *cesBatcher) open(s *cesSlice) {
	m := b.groups[s.group]
	if m == nil {
		m = map[string]*cesSlice{}
		b.groups[s.group] = m
	}
	m[s.name] = s
}

func (b *cesBatcher) close(s *cesSlice) {
	if m := b.groups[s.group]; m != nil {
		delete(m, s.name)
		if len(m) == 0 {
			delete(b.groups, s.group)
		}
	}
}

func (b *cesBatcher) markDirty(s *cesSlice) {
	if _, ok := b.dirty[s.name]; !ok {
		b.dirty[s.name] = b.now()
	}
}

// pending is the number of slices waiting to be written.
func (b *cesBatcher) pending() int { return len(b.dirty) }

// takeWrites returns the writes that bring the stored slices to the desired
// state, and forgets that they are due: the caller reports each outcome
// with written or failed. Empty slices are retired (no endpoint is placed
// in them again) and deleted.
func (b *cesBatcher) takeWrites() []sliceWrite {
	names := make([]string, 0, len(b.dirty))
	for n := range b.dirty {
		names = append(names, n)
	}
	slices.Sort(names)
	var writes []sliceWrite
	for _, name := range names {
		since := b.dirty[name]
		delete(b.dirty, name)
		s := b.slices[name]
		if s == nil {
			continue
		}
		if len(s.endpoints) == 0 {
			b.close(s)
			s.retiring = true
			if !s.exists {
				delete(b.slices, name)
				continue
			}
			writes = append(writes, sliceWrite{Op: opDelete, Slice: b.object(s), ResourceVersion: s.resourceVersion, Since: since})
			continue
		}
		w := sliceWrite{Op: opCreate, Slice: b.object(s), Since: since}
		if s.exists {
			w.Op, w.ResourceVersion = opUpdate, s.resourceVersion
		}
		writes = append(writes, w)
	}
	return writes
}

func (b *cesBatcher) object(s *cesSlice) k8s.CiliumEndpointSlice {
	obj := k8s.CiliumEndpointSlice{Namespace: s.group.namespace, Endpoints: make([]k8s.CoreCiliumEndpoint, 0, len(s.endpoints))}
	obj.APIVersion = k8s.CiliumEndpointSlices.GroupVersion().String()
	obj.Kind = "CiliumEndpointSlice"
	obj.Name = s.name
	for _, ep := range s.endpoints {
		if ep.Networking != nil && ep.Networking.Addressing == nil {
			n := *ep.Networking
			n.Addressing = []k8s.AddressPair{} // required by the schema
			ep.Networking = &n
		}
		obj.Endpoints = append(obj.Endpoints, ep)
	}
	sort.Slice(obj.Endpoints, func(i, j int) bool { return obj.Endpoints[i].Name < obj.Endpoints[j].Name })
	return obj
}

// written records a successful write; resourceVersion is the stored
// object's new version ("" after a delete).
func (b *cesBatcher) written(w sliceWrite, resourceVersion string) {
	s := b.slices[w.Slice.Name]
	if s == nil {
		return
	}
	if w.Op == opDelete {
		s.exists, s.resourceVersion = false, ""
		if len(s.endpoints) == 0 {
			delete(b.slices, s.name)
			delete(b.dirty, s.name)
		}
		return
	}
	s.exists, s.resourceVersion = true, resourceVersion
}

// Failure kinds reported by the controller.
const (
	failRetry    = iota // try the same write again later
	failNotFound        // the stored slice is gone: create it again
	failConflict        // another version is stored: resourceVersion is it
)

// failed records a failed write so that it is retried.
func (b *cesBatcher) failed(w sliceWrite, kind int, resourceVersion string) {
	s := b.slices[w.Slice.Name]
	if s == nil {
		return
	}
	switch kind {
	case failNotFound:
		s.exists, s.resourceVersion = false, ""
		if w.Op == opDelete {
			if len(s.endpoints) == 0 {
				delete(b.slices, s.name)
				delete(b.dirty, s.name)
			}
			return
		}
	case failConflict:
		s.exists, s.resourceVersion = true, resourceVersion
	}
	if _, ok := b.dirty[s.name]; !ok || w.Since.Before(b.dirty[s.name]) {
		b.dirty[s.name] = w.Since
	}
}

// storedGone records that a stored slice was deleted by someone else: one
// that still has endpoints is created again.
func (b *cesBatcher) storedGone(name string) {
	s := b.slices[name]
	if s == nil || !s.exists {
		return
	}
	s.exists, s.resourceVersion = false, ""
	if len(s.endpoints) > 0 {
		b.markDirty(s)
	} else if !s.retiring {
		b.close(s)
		delete(b.slices, name)
		delete(b.dirty, name)
	}
}

// stats returns the number of slices and endpoints.
func (b *cesBatcher) stats() (slices, endpoints int) {
	return len(b.slices), len(b.ceps)
}

// coreEndpoint is the slim form of a CiliumEndpoint a slice carries.
func coreEndpoint(cep *k8s.CiliumEndpoint) k8s.CoreCiliumEndpoint {
	c := k8s.CoreCiliumEndpoint{Name: cep.Name, Networking: cep.Status.Networking, NamedPorts: cep.Status.NamedPorts}
	if cep.Status.Identity != nil {
		c.IdentityID = cep.Status.Identity.ID
	}
	return normalizeCore(c)
}

// normalizeCore makes equal endpoints compare equal whatever their JSON
// spelled (null or [] lists).
func normalizeCore(c k8s.CoreCiliumEndpoint) k8s.CoreCiliumEndpoint {
	if len(c.NamedPorts) == 0 {
		c.NamedPorts = nil
	} else {
		c.NamedPorts = slices.Clone(c.NamedPorts)
	}
	if c.Networking != nil {
		n := *c.Networking
		if len(n.Addressing) == 0 {
			n.Addressing = nil
		} else {
			n.Addressing = slices.Clone(n.Addressing)
		}
		if n.Addressing == nil && n.NodeIP == "" {
			c.Networking = nil
		} else {
			c.Networking = &n
		}
	}
	return c
}

func (w sliceWrite) String() string {
	return fmt.Sprintf("%s %s (%d endpoints)", w.Op, w.Slice.Name, len(w.Slice.Endpoints))
}
