package observer

import (
	"sync"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// Entry is one slot of the ring: a flow or a report of lost events.
type Entry struct {
	Flow *flowpb.Flow
	Lost *flowpb.LostEvent
}

// Ring is a fixed-size buffer of the most recent entries. Writers never
// wait for readers: a reader that falls more than the capacity behind finds
// its position overwritten and learns how many entries it missed. Every
// entry has a sequence number; the ring holds [next-capacity, next).
type Ring struct {
	mu   sync.RWMutex
	buf  []Entry
	next uint64        // sequence number of the next write
	wake chan struct{} // closed on the next write; nil when nobody waits
}

// NewRing returns a ring holding capacity entries (at least 1).
func NewRing(capacity int) *Ring {
	if capacity < 1 {
		capacity = 1
	}
	return &Ring{buf: make([]Entry, capacity)}
}

// Cap returns the capacity.
func (r *Ring) Cap() int { return len(r.buf) }

// Write appends an entry, overwriting the oldest when full.
func (r *Ring) Write(e Entry) {
	r.mu.Lock()
	r.buf[r.next%uint64(len(r.buf))] = e
	r.next++
	wake := r.wake
	r.wake = nil
	r.mu.Unlock()
	if wake != nil {
		close(wake)
	}
}

// Bounds returns the oldest sequence number still held and the next one to
// be written; the ring holds next-oldest entries.
func (r *Ring) Bounds() (oldest, next uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.bounds()
}

func (r *Ring) bounds() (oldest, next uint64) {
	if c := uint64(len(r.buf)); r.next > c {
		return r.next - c, r.next
	}
	return 0, r.next
}

// Read returns the entry at seq. When seq was overwritten it returns the
// oldest sequence number still held as lapped (ok false); when seq is not
// written yet, ok is false and lapped is 0.
func (r *Ring) Read(seq uint64) (e Entry, ok bool, lapped uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	oldest, next := r.bounds()
	switch {
	case seq >= next:
		return Entry{}, false, 0
	case seq < oldest:
		return Entry{}, false, oldest
	}
	return r.buf[seq%uint64(len(r.buf))], true, 0
}

// Wait returns a channel closed once seq has been written (at once if it
// already is).
func (r *Ring) Wait(seq uint64) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq < r.next {
		return closed
	}
	if r.wake == nil {
		r.wake = make(chan struct{})
	}
	return r.wake
}

var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()
