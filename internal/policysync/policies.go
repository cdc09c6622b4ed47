package policysync

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/policy"
	"github.com/lumen-net/lumen/internal/resource"
)

// syncPolicies takes the policy tables' changes since the last call.
func (s *Syncer) syncPolicies() {
	for _, kind := range KindNames {
		sub, t := s.subs[kind], s.kinds[kind]
		if sub == nil {
			continue
		}
		keys, all := sub.Drain()
		if all {
			s.mu.Lock()
			s.dropKind(kind)
			for key, obj := range t.All() {
				s.putObject(key, obj, nil)
			}
			s.mu.Unlock()
			continue
		}
		s.mu.Lock()
		for _, key := range keys {
			if obj, ok := t.Get(key); ok {
				s.putObject(key, obj, nil)
			} else {
				delete(s.policies, key)
				delete(s.bad, key)
			}
		}
		s.mu.Unlock()
	}
}

// dropKind forgets the policies of kind. Called with mu held.
func (s *Syncer) dropKind(kind string) {
	prefix := resource.KindPrefix(kind)
	for k := range s.policies {
		if strings.HasPrefix(k, prefix) {
			delete(s.policies, k)
		}
	}
	for k := range s.bad {
		if strings.HasPrefix(k, prefix) {
			delete(s.bad, k)
		}
	}
}

func (s *Syncer) apply(kind string, u kvstore.Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.Resync {
		s.dropKind(kind)
		for _, kv := range u.KVs {
			s.put(kv)
		}
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			delete(s.policies, ev.KV.Key)
			delete(s.bad, ev.KV.Key)
			continue
		}
		s.put(ev.KV)
	}
}

// put decodes one stored policy leniently: a policy with parts Lumen cannot
// enforce (Kubernetes objects pass only the CRD schema; store objects
// written around the CLI's validation) still applies, those parts failing
// closed (policy.DecodeLenient), and is counted as not fully enforced.
func (s *Syncer) put(kv kvstore.KV) {
	obj, err := resource.Unmarshal(kv.Value)
	s.putObject(kv.Key, obj, err)
}

// putObject is put of a decoded object (err: it could not be decoded).
func (s *Syncer) putObject(key string, obj *resource.Object, err error) {
	var p *policy.Policy
	if err == nil {
		var b []byte
		if b, err = json.Marshal(obj); err == nil {
			p, err = policy.DecodeLenient(b)
		}
	}
	if err != nil {
		s.ImportErrors.Add(1)
		if p == nil {
			s.log.Error("policy cannot be enforced at all", "key", key, "err", err)
			delete(s.policies, key)
		} else {
			s.log.Error("policy not fully enforced: the parts named fail closed", "key", key, "err", err)
			s.policies[key] = p
		}
		s.bad[key] = err.Error()
		return
	}
	delete(s.bad, key)
	s.policies[key] = p
}

// namedPortUse tells whether ingress or egress rules name ports.
func (s *Syncer) namedPortUse() (ingress, egress bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.policies {
		ingress = ingress || len(p.NamedPorts(false)) > 0
		egress = egress || p.HasEgressNamedPorts()
	}
	return ingress, egress
}

// egressPortNames returns the port names egress rules use.
func (s *Syncer) egressPortNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.policies {
		for _, n := range p.NamedPorts(true) {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// NotEnforced returns the policies that are not (fully) enforced as
// written, by store key, with why.
func (s *Syncer) NotEnforced() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.bad))
	for k, v := range s.bad {
		out[k] = v
	}
	return out
}
