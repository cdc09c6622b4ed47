package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// drainEvents returns every event already in the ring: the programs ran
// synchronously, so nothing more is coming.
func drainEvents(t *testing.T, rd *ringbuf.Reader) []Event {
	t.Helper()
	rd.SetDeadline(time.Now())
	var out []Event
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("reading events: %v", err)
		}
		var ev Event
		must(t, ParseEvent(rec.RawSample, &ev))
		out = append(out, ev)
	}
}

// An ICMP echo request's event carries its type and code (and an error's
// code), for both families and at both pod hooks.
func TestICMPEventTypeCode(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	must(t, f.dp.SetConfig(RuntimeConfig{TraceLevel: TraceAll}))
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()

	for _, c := range []struct {
		name             string
		src, dst         netip.Addr
		proto, typ, code uint8
	}{
		{"echo request", podA4, podB4, 1, 8, 0},
		{"echo request v6", podA6, podB6, 58, 128, 0},
		{"echo reply", podA4, podB4, 1, 0, 0},
		{"echo reply v6", podA6, podB6, 58, 129, 0},
		{"port unreachable", podA4, podB4, 1, 3, 3},
		{"address unreachable v6", podA6, podB6, 58, 1, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			pkt := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: c.src, Dst: c.dst, Proto: c.proto, SrcPort: 77, ICMPType: c.typ, ICMPCode: c.code}.Bytes()
			if res := f.run(HookFromContainer, "lxca", pkt); res.Verdict != tcActRedirect {
				t.Fatalf("from_container verdict %d, want redirect", res.Verdict)
			}
			if res := f.run(HookToContainer, "lxcb", pkt); res.Verdict != tcActOK {
				t.Fatalf("to_container verdict %d, want pass", res.Verdict)
			}
			evs := drainEvents(t, rd)
			var obs []uint8
			for _, ev := range evs {
				if ev.Type != EventTrace {
					continue
				}
				obs = append(obs, ev.Subtype)
				if ev.Proto != c.proto || ev.ICMPType != c.typ || ev.ICMPCode != c.code || ev.Src != c.src || ev.Dst != c.dst {
					t.Errorf("event %+v: want proto %d type %d code %d %s -> %s", ev, c.proto, c.typ, c.code, c.src, c.dst)
				}
			}
			if want := []uint8{5, 101}; !slices.Equal(obs, want) {
				t.Errorf("trace observation points %v, want %v (from-endpoint, to-endpoint)", obs, want)
			}
		})
	}
	// Other protocols leave the fields zero.
	f.run(HookFromContainer, "lxca", tcp(podA4, podB4, 0x02))
	for _, ev := range drainEvents(t, rd) {
		if ev.ICMPType != 0 || ev.ICMPCode != 0 {
			t.Errorf("TCP event with ICMP type %d code %d", ev.ICMPType, ev.ICMPCode)
		}
	}
}

// step is one packet of a conversation between pod A (client) and pod B.
type step struct {
	reply bool // B -> A
	proto uint8
	flags uint8
}

// conversation is a short TCP connection and a UDP exchange.
var conversation = []step{
	{false, 6, 0x02}, // SYN
	{true, 6, 0x12},  // SYN-ACK
	{false, 6, 0x10}, // ACK
	{false, 6, 0x18}, // PSH-ACK (request)
	{true, 6, 0x18},  // PSH-ACK (response)
	{false, 6, 0x10}, // ACK
	{false, 6, 0x11}, // FIN-ACK
	{true, 6, 0x11},  // FIN-ACK
	{false, 6, 0x10}, // ACK
	{false, 17, 0},   // UDP request
	{true, 17, 0},    // UDP reply
	{false, 17, 0},   // UDP request
}

// TestTraceAggregationLevels runs the same conversation through both pods'
// hooks (from_container on the sender's veth, to_container on the
// receiver's, as a local delivery does) at each trace level and checks
// exactly which packets were reported where.
func TestTraceAggregationLevels(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()

	// Per level, the indexes of the conversation's packets reported at
	// each hook (the hooks have their own conntrack entries and agree).
	all := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	levels := []struct {
		name     string
		level    uint32
		from, to []int // reported at from-endpoint, to-endpoint
	}{
		{"none (every packet)", TraceAll, all, all},
		{"low (to-* points only)", TraceLow, nil, all},
		// First packet each way, then new TCP flags per direction: the
		// client's ACK, PSH, FIN; the server's PSH, FIN.
		{"medium (per connection, TCP flag changes)", TraceControl, []int{0, 1, 2, 3, 4, 6, 7, 9, 10}, []int{0, 1, 2, 3, 4, 6, 7, 9, 10}},
		// SYN, both FINs, and the UDP exchange's first packet.
		{"maximum (connection start and end)", TraceMax, []int{0, 6, 7, 9}, []int{0, 6, 7, 9}},
		{"no traces", TraceNone, nil, nil},
	}
	for i, l := range levels {
		t.Run(l.name, func(t *testing.T) {
			must(t, f.dp.SetConfig(RuntimeConfig{TraceLevel: l.level}))
			drainEvents(t, rd)
			// A fresh connection per level: its own ports.
			cport := uint16(41000 + i)
			for _, s := range conversation {
				src, dst, sport, dport := podA4, podB4, cport, uint16(80)
				from, to := "lxca", "lxcb"
				if s.reply {
					src, dst, sport, dport, from, to = dst, src, dport, sport, to, from
				}
				pkt := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: dst, Proto: s.proto, SrcPort: sport, DstPort: dport, TCPFlags: s.flags}.Bytes()
				if res := f.run(HookFromContainer, from, pkt); res.Verdict != tcActRedirect {
					t.Fatalf("from_container verdict %d, want redirect", res.Verdict)
				}
				if res := f.run(HookToContainer, to, pkt); res.Verdict != tcActOK {
					t.Fatalf("to_container verdict %d, want pass", res.Verdict)
				}
			}
			got := map[uint8][]string{}
			for _, ev := range drainEvents(t, rd) {
				if ev.Type == EventTrace {
					got[ev.Subtype] = append(got[ev.Subtype], describe(ev, cport))
				}
			}
			for _, c := range []struct {
				obs  uint8
				name string
				want []int
			}{{5, "from-endpoint", l.from}, {101, "to-endpoint", l.to}} {
				var want []string
				for _, i := range c.want {
					want = append(want, describeStep(conversation[i]))
				}
				if !slices.Equal(got[c.obs], want) {
					t.Errorf("%s reported\n  %s\nwant\n  %s", c.name, strings.Join(got[c.obs], ", "), strings.Join(want, ", "))
				}
			}
		})
	}
}

func describeStep(s step) string {
	dir := "c>s"
	if s.reply {
		dir = "s>c"
	}
	if s.proto == 17 {
		return dir + " UDP"
	}
	return fmt.Sprintf("%s TCP %#02x", dir, s.flags)
}

func describe(ev Event, cport uint16) string {
	s := step{reply: ev.SrcPort != cport, proto: ev.Proto, flags: ev.TCPFlags}
	return describeStep(s)
}

// A full ring buffer loses events and the datapath counts each one (what
// the agent reports as lost events); the ring's size is configurable.
func TestEventsLostCounted(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir() + "/bpf"
	dp, err := Load(Options{BPFFS: dir, EventsRingSize: 4096})
	if err != nil {
		t.Fatalf("loading datapath with a 4 KiB ring: %v", err)
	}
	t.Cleanup(func() { dp.Close(); _ = unix.Unmount(dir, 0) })
	f.dp = dp
	f.addPods()
	must(t, dp.SetConfig(RuntimeConfig{TraceLevel: TraceAll}))
	if n, err := dp.EventsLost(); err != nil || n != 0 {
		t.Fatalf("lost before any traffic: %d, %v", n, err)
	}
	rd, err := dp.OpenEvents()
	must(t, err)
	defer rd.Close()
	if rd.BufferSize() != 4096 {
		t.Fatalf("ring of %d bytes, want 4096", rd.BufferSize())
	}

	const sent = 200
	fits := 4096 / (8 + EventSize) // each record has an 8-byte header
	pkt := tcp(podA4, podB4, 0x10)
	for range sent {
		f.run(HookToContainer, "lxcb", pkt)
	}
	lost, err := dp.EventsLost()
	must(t, err)
	got := len(drainEvents(t, rd))
	if got != fits || lost != uint64(sent-fits) {
		t.Errorf("%d events read and %d lost, want %d and %d", got, lost, fits, sent-fits)
	}
	// Once drained, the ring takes events again.
	f.run(HookToContainer, "lxcb", pkt)
	if n := len(drainEvents(t, rd)); n != 1 {
		t.Errorf("%d events after draining, want 1", n)
	}
	if n, _ := dp.EventsLost(); n != lost {
		t.Errorf("lost count moved from %d to %d with room in the ring", lost, n)
	}
}
