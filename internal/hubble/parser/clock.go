package parser

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Clock converts CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) into wall
// time with an offset measured against CLOCK_REALTIME. Sync it now and then
// so that wall clock steps (NTP) are followed.
type Clock struct {
	offset atomic.Int64 // realtime - monotonic, ns
}

// NewClock returns a synced clock.
func NewClock() *Clock {
	c := &Clock{}
	c.Sync()
	return c
}

// FixedClock returns a clock with a given offset, for tests.
func FixedClock(offset time.Duration) *Clock {
	c := &Clock{}
	c.offset.Store(int64(offset))
	return c
}

// Sync measures the offset: the realtime reading is bracketed by two
// monotonic ones and the tightest of a few tries wins.
func (c *Clock) Sync() {
	best, bestGap := int64(0), int64(-1)
	for range 3 {
		var m1, r, m2 unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1) != nil ||
			unix.ClockGettime(unix.CLOCK_REALTIME, &r) != nil ||
			unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2) != nil {
			continue
		}
		gap := m2.Nano() - m1.Nano()
		if bestGap < 0 || gap < bestGap {
			bestGap = gap
			best = r.Nano() - (m1.Nano()+m2.Nano())/2
		}
	}
	if bestGap >= 0 {
		c.offset.Store(best)
	}
}

// Offset returns realtime - monotonic.
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Wall converts a monotonic timestamp.
func (c *Clock) Wall(mono uint64) time.Time {
	return time.Unix(0, int64(mono)+c.offset.Load())
}

// Timestamp converts a monotonic timestamp into a protobuf timestamp.
func (c *Clock) Timestamp(mono uint64) *timestamppb.Timestamp {
	s, n := c.split(mono)
	return &timestamppb.Timestamp{Seconds: s, Nanos: n}
}

func (c *Clock) split(mono uint64) (int64, int32) {
	ns := int64(mono) + c.offset.Load()
	return ns / 1e9, int32(ns % 1e9)
}

// Monotonic returns the current CLOCK_MONOTONIC reading.
func Monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
