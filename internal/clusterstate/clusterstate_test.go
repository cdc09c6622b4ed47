package clusterstate

import (
	"context"
	"slices"
	"testing"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
)

// listing is a store whose every prefix lists kvs (those under it) once.
type listing struct {
	kvstore.Store
	kvs []kvstore.KV
}

func (l listing) ListAndWatch(ctx context.Context, prefix string) <-chan kvstore.Update {
	out := make(chan kvstore.Update, 1)
	u := kvstore.Update{Resync: true}
	for _, kv := range l.kvs {
		if len(kv.Key) > len(prefix) && kv.Key[:len(prefix)] == prefix {
			u.KVs = append(u.KVs, kv)
		}
	}
	out <- u
	go func() { <-ctx.Done(); close(out) }()
	return out
}

func podKV(ns, name, nodeName string, labels string, port string) kvstore.KV {
	v := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + name + `","namespace":"` + ns + `","labels":` + labels + `},` +
		`"spec":{"nodeName":"` + nodeName + `","containers":[{"name":"c","ports":[{"name":"` + port + `","containerPort":80}]}]}}`
	return kvstore.KV{Key: resource.Key("Pod", ns, name), Value: []byte(v)}
}

func names(objs []*resource.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Metadata.Namespace+"/"+o.Metadata.Name)
	}
	return out
}

func TestPodIndexes(t *testing.T) {
	store := listing{kvs: []kvstore.KV{
		podKV("a", "web", "n1", `{"app":"web"}`, "http"),
		podKV("a", "db", "n2", `{"app":"db"}`, "sql"),
		podKV("b", "web", "n2", `{"app":"web"}`, "http"),
		{Key: node1Key, Value: []byte(`{"name":"n1","ipv4":"10.0.0.1"}`)},
	}}
	ts := New(store, []string{"Service", "Pod"}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go ts.Run(ctx)
	if err := ts.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		index, value string
		want         []string
	}{
		{ByNamedPort, "http", []string{"a/web", "b/web"}},
		{ByNode, "n2", []string{"a/db", "b/web"}},
		{ByLabel, "app=web", []string{"a/web", "b/web"}},
		{ByNamespace, "a", []string{"a/db", "a/web"}},
	} {
		if got := names(ts.Pods().Index(c.index, c.value)); !slices.Equal(got, c.want) {
			t.Errorf("Pods by %s %q = %v, want %v", c.index, c.value, got, c.want)
		}
	}
	if n, ok := ts.Nodes.Get(node1Key); !ok || n.IPv4 != "10.0.0.1" {
		t.Errorf("node n1 = %+v %v", n, ok)
	}
	if ts.Kind("Service").Len() != 0 || ts.Namespaces().Len() != 0 {
		t.Error("tables of other kinds are not empty")
	}
}

const node1Key = "/lumen/v1/nodes/n1"
