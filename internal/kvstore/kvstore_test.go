package kvstore

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestGetPutDeleteListCreate(t *testing.T) {
	c := newTestClient(t, startTestServer(t))
	ctx := context.Background()

	if _, ok, err := c.Get(ctx, "/t/a"); err != nil || ok {
		t.Fatalf("Get missing = ok %v, err %v", ok, err)
	}
	if _, err := c.Put(ctx, "/t/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	kv, ok, err := c.Get(ctx, "/t/a")
	if err != nil || !ok || string(kv.Value) != "1" {
		t.Fatalf("Get = %+v %v %v, want value 1", kv, ok, err)
	}
	if created, err := c.Create(ctx, "/t/a", []byte("2")); err != nil || created {
		t.Fatalf("Create existing = %v %v, want false", created, err)
	}
	if created, err := c.Create(ctx, "/t/b", []byte("2")); err != nil || !created {
		t.Fatalf("Create new = %v %v, want true", created, err)
	}
	if ok, err := c.CompareAndPut(ctx, "/t/a", []byte("3"), kv.ModRevision); err != nil || !ok {
		t.Fatalf("CompareAndPut current rev = %v %v", ok, err)
	}
	if ok, err := c.CompareAndPut(ctx, "/t/a", []byte("4"), kv.ModRevision); err != nil || ok {
		t.Fatalf("CompareAndPut stale rev = %v %v, want false", ok, err)
	}
	if _, err := c.Put(ctx, "/other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	kvs, rev, err := c.List(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if got := keysValues(kvs); got != "/t/a=3 /t/b=2" || rev == 0 {
		t.Fatalf("List = %q rev %d", got, rev)
	}
	if del, err := c.Delete(ctx, "/t/a"); err != nil || !del {
		t.Fatalf("Delete = %v %v", del, err)
	}
	if del, err := c.Delete(ctx, "/t/a"); err != nil || del {
		t.Fatalf("Delete again = %v %v, want false", del, err)
	}
	if n, err := c.DeletePrefix(ctx, "/t/"); err != nil || n != 1 {
		t.Fatalf("DeletePrefix = %d %v, want 1", n, err)
	}
}

func TestCreateAll(t *testing.T) {
	c := newTestClient(t, startTestServer(t))
	ctx := context.Background()
	ok, _, err := c.CreateAll(ctx, KV{Key: "/a", Value: []byte("1")}, KV{Key: "/b", Value: []byte("2")})
	if err != nil || !ok {
		t.Fatalf("CreateAll = %v %v", ok, err)
	}
	ok, existing, err := c.CreateAll(ctx, KV{Key: "/b", Value: []byte("x")}, KV{Key: "/c", Value: []byte("y")})
	if err != nil || ok {
		t.Fatalf("CreateAll with one existing key = %v %v, want false", ok, err)
	}
	if got := keysValues(existing); got != "/b=2" {
		t.Fatalf("existing = %q, want /b=2", got)
	}
	if _, found, _ := c.Get(ctx, "/c"); found {
		t.Fatal("CreateAll wrote /c although /b existed")
	}
}

func TestUnreachableNamesEndpoint(t *testing.T) {
	ep := "unix://" + filepath.Join(t.TempDir(), "nothing.sock")
	_, err := Dial(context.Background(), ep)
	if !IsUnreachable(err) || !strings.Contains(err.Error(), ep) {
		t.Fatalf("Dial = %v, want UnreachableError naming %s", err, ep)
	}
	c, err := New(ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Timeout = time.Second
	_, err = c.Put(context.Background(), "/x", nil)
	if !IsUnreachable(err) || !strings.Contains(err.Error(), ep) {
		t.Fatalf("Put = %v, want UnreachableError naming %s", err, ep)
	}
}

func TestBadEndpoint(t *testing.T) {
	for _, ep := range []string{"", "tcp://1.2.3.4:1", "unix://relative.sock", "http://nohost"} {
		if _, err := New(ep); err == nil || !strings.Contains(err.Error(), "invalid kvstore endpoint") {
			t.Errorf("New(%q) = %v, want invalid endpoint error", ep, err)
		}
	}
}

func TestWatchCompacted(t *testing.T) {
	c := newTestClient(t, startTestServer(t))
	ctx := context.Background()
	rev1, _ := c.Put(ctx, "/w/a", []byte("1"))
	rev2, _ := c.Put(ctx, "/w/a", []byte("2"))
	if _, err := c.cli.Compact(ctx, rev2); err != nil {
		t.Fatal(err)
	}
	var last WatchResponse
	for r := range c.Watch(ctx, "/w/", rev1) {
		last = r
	}
	if last.Err == nil || !strings.Contains(last.Err.Error(), "compacted") {
		t.Fatalf("last response = %+v, want compaction error", last)
	}
}

func TestListAndWatch(t *testing.T) {
	c := newTestClient(t, startTestServer(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Put(ctx, "/p/a", []byte("1"))
	c.Put(ctx, "/q/x", []byte("not mine"))

	st := newMirror()
	ch := c.ListAndWatch(ctx, "/p/")
	st.next(t, ch)
	if !st.resyncs[0] || st.String() != "/p/a=1" {
		t.Fatalf("initial = %q (resync %v)", st, st.resyncs)
	}
	c.Put(ctx, "/p/b", []byte("2"))
	st.waitFor(t, ch, "/p/a=1 /p/b=2")
	c.Delete(ctx, "/p/a")
	st.waitFor(t, ch, "/p/b=2")
	cancel()
	for range ch {
	}
}

// TestListAndWatchRestart restarts the store from an empty data dir on the
// same socket: the watcher must notice and converge on the new content.
func TestListAndWatchRestart(t *testing.T) {
	dir := t.TempDir()
	ep := "unix://" + filepath.Join(dir, "etcd.sock")
	stop := startServer(t, filepath.Join(dir, "data1"), ep)
	c := newTestClient(t, ep)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Put(ctx, "/p/old", []byte("1"))
	c.Put(ctx, "/p/old", []byte("2"))
	c.Put(ctx, "/p/old2", []byte("3"))

	st := newMirror()
	ch := c.ListAndWatch(ctx, "/p/")
	st.waitFor(t, ch, "/p/old=2 /p/old2=3")

	stop()
	startServer(t, filepath.Join(dir, "data2"), ep)
	// Retry: the client reconnects on its own schedule.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := c.Put(ctx, "/p/new", []byte("n")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st.waitFor(t, ch, "/p/new=n")
	if n := st.resyncCount(); n < 2 {
		t.Fatalf("got %d resyncs, want a second one after the restart", n)
	}
}

// TestNoTCPListeners checks that the server binds no TCP socket (it must
// work inside any network namespace without touching host interfaces).
func TestNoTCPListeners(t *testing.T) {
	startTestServer(t)
	inodes := map[string]bool{}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// st 0A is LISTEN; field 9 is the inode.
			if len(fields) > 9 && fields[3] == "0A" && inodes[fields[9]] {
				t.Errorf("this process listens on TCP %s", fields[1])
			}
		}
		fh.Close()
	}
}

func startTestServer(t *testing.T) string {
	dir := t.TempDir()
	ep := "unix://" + filepath.Join(dir, "etcd.sock")
	startServer(t, filepath.Join(dir, "data"), ep)
	return ep
}

func startServer(t *testing.T, dataDir, ep string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServerConfig{DataDir: dataDir, ClientURL: ep, OnReady: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Serve: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func newTestClient(t *testing.T, ep string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func keysValues(kvs []KV) string {
	var s []string
	for _, kv := range kvs {
		s = append(s, kv.Key+"="+string(kv.Value))
	}
	return strings.Join(s, " ")
}

// mirror applies ListAndWatch updates like a consumer would.
type mirror struct {
	m       map[string]string
	resyncs []bool
}

func newMirror() *mirror { return &mirror{m: map[string]string{}} }

func (m *mirror) next(t *testing.T, ch <-chan Update) {
	t.Helper()
	select {
	case u, ok := <-ch:
		if !ok {
			t.Fatal("update channel closed")
		}
		m.resyncs = append(m.resyncs, u.Resync)
		if u.Resync {
			m.m = map[string]string{}
			for _, kv := range u.KVs {
				m.m[kv.Key] = string(kv.Value)
			}
		}
		for _, e := range u.Events {
			if e.Type == EventDelete {
				delete(m.m, e.KV.Key)
			} else {
				m.m[e.KV.Key] = string(e.KV.Value)
			}
		}
	case <-time.After(time.Minute):
		t.Fatalf("no update; state %q", m)
	}
}

func (m *mirror) waitFor(t *testing.T, ch <-chan Update, want string) {
	t.Helper()
	for m.String() != want {
		m.next(t, ch)
	}
}

func (m *mirror) resyncCount() (n int) {
	for _, r := range m.resyncs {
		if r {
			n++
		}
	}
	return n
}

func (m *mirror) String() string {
	var kvs []KV
	for k, v := range m.m {
		kvs = append(kvs, KV{Key: k, Value: []byte(v)})
	}
	sortKVs(kvs)
	return keysValues(kvs)
}

func sortKVs(kvs []KV) { sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key }) }
