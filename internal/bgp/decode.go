package bgp

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/resource"
)

// walker decodes a generic JSON tree (from YAML) field by field, recording
// every problem with its path, so that one pass reports all of them.
type walker struct {
	errs resource.ErrorList
}

func (w *walker) fail(path string, value any, detail string) {
	w.errs = append(w.errs, resource.Invalid(path, show(value), detail))
}

func (w *walker) add(fe *fielderr.Error) {
	if fe != nil {
		w.errs = append(w.errs, fe)
	}
}

// show turns a decoded JSON value into what an error message quotes.
func show(v any) any {
	switch x := v.(type) {
	case nil:
		return "null"
	case json.Number:
		return x.String()
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return v
}

func child(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// object checks that v is a mapping with only known keys (unknown keys are
// errors, as kubectl's strict decoding makes them).
func (w *walker) object(path string, v any, known ...string) map[string]any {
	m, ok := v.(map[string]any)
	if !ok {
		w.errs = append(w.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf("must be a mapping, got %s", describe(v))})
		return nil
	}
	for _, k := range sortedKeys(m) {
		if !slices.Contains(known, k) {
			w.errs = append(w.errs, &fielderr.Error{Path: child(path, k), Msg: fmt.Sprintf("unknown field %q (known: %s)", k, strings.Join(known, ", "))})
		}
	}
	return m
}

func (w *walker) list(path string, v any) []any {
	if v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		w.errs = append(w.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf("must be a list, got %s", describe(v))})
	}
	return l
}

func (w *walker) str(path string, v any) string {
	if v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		w.errs = append(w.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf("must be a string, got %s", describe(v))})
	}
	return s
}

func (w *walker) boolean(path string, v any, def bool) bool {
	if v == nil {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		w.errs = append(w.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf("must be true or false, got %s", describe(v))})
	}
	return b
}

// integer reads a whole number within [lo, hi]; absent gives def.
func (w *walker) integer(path string, v any, def, lo, hi int64) int64 {
	if v == nil {
		return def
	}
	var n int64
	switch x := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(x.String(), 10, 64)
		if err != nil {
			w.fail(path, x.String(), "must be a whole number")
			return def
		}
		n = i
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			w.fail(path, x, "must be a whole number")
			return def
		}
		n = i
	default:
		w.errs = append(w.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf("must be a number, got %s", describe(v))})
		return def
	}
	if n < lo || n > hi {
		w.fail(path, n, fmt.Sprintf("must be between %d and %d", lo, hi))
		return def
	}
	return n
}

// asn reads an AS number: 1 to 4294967295, not AS_TRANS (23456). Numbers
// and asdot strings ("1.10") are accepted.
func (w *walker) asn(path string, v any) uint32 {
	if v == nil {
		w.add(resource.Required(path))
		return 0
	}
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
		if strings.ContainsAny(s, ".eE") {
			// YAML reads 1.10 as the number 1.1: asdot must be a string.
			w.fail(path, s, "not an AS number (quote asdot notation, e.g. \"1.10\")")
			return 0
		}
	case string:
		s = strings.TrimSpace(x)
	default:
		w.errs = append(w.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf("must be an AS number, got %s", describe(v))})
		return 0
	}
	a, err := ParseASN(s)
	if err != nil {
		w.fail(path, s, err.Error())
		return 0
	}
	return a
}

// ParseASN parses an AS number ("65001", or asdot "1.10"). 0 and AS_TRANS
// (23456) are refused.
func ParseASN(s string) (uint32, error) {
	var n uint64
	if hi, lo, ok := strings.Cut(s, "."); ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("not an AS number (want 1-4294967295 or asdot like 1.10)")
		}
		n = h<<16 | l
	} else {
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("not an AS number (want 1-4294967295 or asdot like 1.10)")
		}
		n = u
	}
	switch {
	case n == 0 || n > math.MaxUint32:
		return 0, fmt.Errorf("must be between 1 and 4294967295")
	case n == 23456:
		return 0, fmt.Errorf("AS 23456 is AS_TRANS, reserved for 2-byte AS compatibility")
	}
	return uint32(n), nil
}

// duration reads a Go duration ("90s", "1m30s"), or a number of seconds,
// within [lo, hi]; absent gives def.
func (w *walker) duration(path string, v any, def, lo, hi time.Duration) time.Duration {
	if v == nil {
		return def
	}
	var d time.Duration
	switch x := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(x.String(), 10, 64)
		if err != nil || n > int64(hi/time.Second)+1 {
			w.fail(path, x.String(), fmt.Sprintf("want a duration between %s and %s", lo, hi))
			return def
		}
		d = time.Duration(n) * time.Second
	case string:
		var err error
		d, err = time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			w.fail(path, x, "not a duration (want e.g. 90s or 1m30s)")
			return def
		}
	default:
		w.errs = append(w.errs, &fielderr.Error{Path: path, Msg: fmt.Sprintf("must be a duration like \"90s\", got %s", describe(v))})
		return def
	}
	if d%time.Second != 0 {
		w.fail(path, d.String(), "must be whole seconds")
		return def
	}
	if d < lo || d > hi {
		w.fail(path, d.String(), fmt.Sprintf("must be between %s and %s", lo, hi))
		return def
	}
	return d
}

// addr reads an IP address; host prefixes (/32, /128) are accepted as the
// address, as CiliumBGPPeeringPolicy writes peerAddress in CIDR form.
func (w *walker) addr(path string, v any) netip.Addr {
	if v == nil {
		w.add(resource.Required(path))
		return netip.Addr{}
	}
	s := w.str(path, v)
	if s == "" {
		if _, ok := v.(string); ok {
			w.add(resource.Required(path))
		}
		return netip.Addr{}
	}
	a, err := ParseHostAddr(s)
	if err != nil {
		w.fail(path, s, err.Error())
	}
	return a
}

// ParseHostAddr parses "10.0.0.1", "fd00::1", "10.0.0.1/32" or "fd00::1/128".
func ParseHostAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("not an IP address or host prefix")
		}
		if p.Bits() != p.Addr().BitLen() {
			return netip.Addr{}, fmt.Errorf("must be a single address (/%d)", p.Addr().BitLen())
		}
		return validPeer(p.Addr())
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an IP address")
	}
	return validPeer(a)
}

func validPeer(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	switch {
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("zoned (link-local) peer addresses are not supported")
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback():
		return netip.Addr{}, fmt.Errorf("not a unicast peer address")
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Errorf("not a unicast peer address")
	}
	return a, nil
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
