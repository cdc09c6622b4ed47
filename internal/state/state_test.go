package state

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// fakeStore hands out one channel per ListAndWatch call and counts calls.
type fakeStore struct {
	kvstore.Store
	mu      sync.Mutex
	watches map[string]int
	chans   map[string]chan kvstore.Update
}

func newFakeStore() *fakeStore {
	return &fakeStore{watches: map[string]int{}, chans: map[string]chan kvstore.Update{}}
}

func (f *fakeStore) ch(prefix string) chan kvstore.Update {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.chans[prefix] == nil {
		f.chans[prefix] = make(chan kvstore.Update)
	}
	return f.chans[prefix]
}

func (f *fakeStore) ListAndWatch(ctx context.Context, prefix string) <-chan kvstore.Update {
	f.mu.Lock()
	f.watches[prefix]++
	f.mu.Unlock()
	in, out := f.ch(prefix), make(chan kvstore.Update)
	go func() {
		defer close(out)
		for {
			select {
			case u := <-in:
				select {
				case out <- u:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

type pet struct {
	Name  string   `json:"name"`
	Owner string   `json:"owner"`
	Tags  []string `json:"tags"`
}

func decodePet(kv kvstore.KV) (pet, error) {
	var p pet
	if err := json.Unmarshal(kv.Value, &p); err != nil {
		return pet{}, err
	}
	if p.Name == "" {
		return pet{}, errors.New("no name")
	}
	return p, nil
}

func kv(key, v string) kvstore.KV { return kvstore.KV{Key: key, Value: []byte(v)} }

func names(ps []pet) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// deliver sends u to the table's feed and waits until the table applied it
// (the subscription fires after every applied update that changes rows).
func deliver(t *testing.T, fs *fakeStore, prefix string, sub *Subscription, u kvstore.Update) ([]string, bool) {
	t.Helper()
	fs.ch(prefix) <- u
	<-sub.Changed()
	return sub.Drain()
}

func TestTableFedOnceIndexedAndKeepsRowsOnBadUpdates(t *testing.T) {
	fs := newFakeStore()
	ts := New(fs, nil)
	pets := Register(ts, Spec[pet]{Name: "pets", Prefix: "/p/", Decode: decodePet, Indexes: map[string]func(pet) []string{
		"owner": func(p pet) []string { return []string{p.Owner} },
		"tag":   func(p pet) []string { return p.Tags },
	}})
	others := Register(ts, Spec[pet]{Name: "others", Prefix: "/o/", Decode: decodePet})
	sub := pets.Subscribe()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { ts.Run(ctx); close(done) }()

	keys, all := deliver(t, fs, "/p/", sub, kvstore.Update{Resync: true, KVs: []kvstore.KV{
		kv("/p/a", `{"name":"a","owner":"ann","tags":["cat","old"]}`),
		kv("/p/b", `{"name":"b","owner":"bob","tags":["dog"]}`),
		kv("/p/bad", `{`),
	}})
	<-pets.Synced()
	if !all || !slices.Equal(keys, []string{"/p/a", "/p/b"}) {
		t.Fatalf("first listing: keys %v all %v, want [/p/a /p/b] and all", keys, all)
	}
	if got := names(pets.List()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("List = %v", got)
	}
	if got := names(pets.Index("tag", "cat")); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Index(tag, cat) = %v", got)
	}
	if pets.DecodeErrors() != 1 {
		t.Fatalf("DecodeErrors = %d, want 1", pets.DecodeErrors())
	}
	if others.IsSynced() {
		t.Fatal("others synced before its listing")
	}
	rev := pets.Revision()

	// A bad update keeps the previous row; a good one moves it in the indexes.
	keys, _ = deliver(t, fs, "/p/", sub, kvstore.Update{Events: []kvstore.Event{
		{Type: kvstore.EventPut, KV: kv("/p/a", `{"owner":"nobody"}`)},
		{Type: kvstore.EventPut, KV: kv("/p/b", `{"name":"b","owner":"ann"}`)},
	}})
	if !slices.Equal(keys, []string{"/p/b"}) {
		t.Fatalf("changed keys %v, want [/p/b]", keys)
	}
	if a, ok := pets.Get("/p/a"); !ok || a.Owner != "ann" {
		t.Fatalf("a after a bad update = %+v %v, want owner ann kept", a, ok)
	}
	if got := names(pets.Index("owner", "ann")); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Index(owner, ann) = %v", got)
	}
	if got := pets.Index("tag", "dog"); len(got) != 0 {
		t.Fatalf("Index(tag, dog) = %v after b lost its tag", got)
	}
	if pets.Revision() != rev+1 || pets.DecodeErrors() != 2 {
		t.Fatalf("revision %d decode errors %d, want %d and 2", pets.Revision(), pets.DecodeErrors(), rev+1)
	}

	// A new listing drops what it lacks, keeps what it cannot decode.
	keys, all = deliver(t, fs, "/p/", sub, kvstore.Update{Resync: true, KVs: []kvstore.KV{
		kv("/p/a", `not json`),
		kv("/p/c", `{"name":"c","owner":"cy"}`),
	}})
	if !all || !slices.Equal(keys, []string{"/p/b", "/p/c"}) {
		t.Fatalf("relisting: keys %v all %v", keys, all)
	}
	if got := names(pets.List()); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("List after relisting = %v", got)
	}

	cancel()
	<-done
	if fs.watches["/p/"] != 1 || fs.watches["/o/"] != 1 || len(fs.watches) != 2 {
		t.Fatalf("watches = %v, want one per table", fs.watches)
	}
}

func TestLateSubscriberSeesEverything(t *testing.T) {
	ts := New(nil, nil)
	pets := Register(ts, Spec[pet]{Name: "pets", Prefix: "/p/", Decode: decodePet})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go ts.Run(ctx)
	if err := ts.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	sub := pets.Subscribe()
	<-sub.Changed()
	if _, all := sub.Drain(); !all {
		t.Fatal("a subscriber after the sync was not told to read everything")
	}
	<-pets.Changed()
	if len(ts.Pending()) != 0 {
		t.Fatalf("pending %v without a store", ts.Pending())
	}
}

func TestRegisterRejectsOverlappingPrefixes(t *testing.T) {
	ts := New(nil, nil)
	Register(ts, Spec[pet]{Name: "pets", Prefix: "/p/", Decode: decodePet})
	defer func() {
		if recover() == nil {
			t.Fatal("a second table under /p/ was accepted: its entries would be watched twice")
		}
	}()
	Register(ts, Spec[pet]{Name: "cats", Prefix: "/p/cats/", Decode: decodePet})
}
