package filters

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a Kubernetes label selector applied to Cilium-style labels
// ("k8s:app=frontend", "reserved:world"). A key may name the label's source
// ("k8s:app"); without one, or with "any:", labels of every source match.
type Selector struct {
	reqs []requirement
}

type op int

const (
	opExists op = iota
	opNotExists
	opEquals
	opNotEquals
	opIn
	opNotIn
)

type requirement struct {
	source, key string
	op          op
	values      []string
}

// Bounds of a selector, as Kubernetes bounds labels: a key is an optional
// DNS-subdomain prefix (253) and a name (63), a value at most 63; Cilium's
// source ("k8s:") is a name too. A whole selector stays small.
const (
	maxKeyName     = 63
	maxKeyPrefix   = 253
	maxValue       = 63
	maxSelectorLen = 8192
)

// ParseSelector parses "app=frontend,tier in (web, api),!canary".
func ParseSelector(s string) (Selector, error) {
	if len(s) > maxSelectorLen {
		return Selector{}, fmt.Errorf("selector of %d characters: at most %d", len(s), maxSelectorLen)
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f {
			return Selector{}, fmt.Errorf("control character %q at offset %d", s[i], i)
		}
	}
	p := &selParser{in: s}
	var sel Selector
	p.space()
	if p.eof() {
		return sel, fmt.Errorf("empty selector")
	}
	for {
		r, err := p.requirement()
		if err == nil {
			err = r.check()
		}
		if err != nil {
			return Selector{}, err
		}
		sel.reqs = append(sel.reqs, r)
		p.space()
		if p.eof() {
			return sel, nil
		}
		if !p.consume(",") {
			return Selector{}, fmt.Errorf("expected ',' at offset %d", p.pos)
		}
	}
}

type selParser struct {
	in  string
	pos int
}

func (p *selParser) eof() bool { return p.pos >= len(p.in) }

func (p *selParser) space() {
	for !p.eof() && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t') {
		p.pos++
	}
}

func (p *selParser) consume(tok string) bool {
	if strings.HasPrefix(p.in[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

// word reads up to a delimiter.
func (p *selParser) word() string {
	start := p.pos
	for !p.eof() && !strings.ContainsRune(" \t=!,()", rune(p.in[p.pos])) {
		p.pos++
	}
	return p.in[start:p.pos]
}

func (p *selParser) requirement() (requirement, error) {
	var r requirement
	p.space()
	neg := p.consume("!")
	p.space()
	key := p.word()
	if key == "" {
		return r, fmt.Errorf("missing label key at offset %d", p.pos)
	}
	r.source, r.key = "", key
	if i := strings.IndexByte(key, ':'); i >= 0 {
		r.source, r.key = key[:i], key[i+1:]
		if r.source == "any" {
			r.source = ""
		}
		if r.key == "" {
			return r, fmt.Errorf("missing label key after %q", key)
		}
	}
	if neg {
		r.op = opNotExists
		return r, nil
	}
	p.space()
	switch {
	case p.eof() || p.in[p.pos] == ',':
		r.op = opExists
		return r, nil
	case p.consume("=="), p.consume("="):
		r.op = opEquals
	case p.consume("!="):
		r.op = opNotEquals
	default:
		w := p.word()
		switch w {
		case "in":
			r.op = opIn
		case "notin":
			r.op = opNotIn
		default:
			return r, fmt.Errorf("unknown operator %q after key %q: want =, ==, !=, in or notin", w, key)
		}
		p.space()
		if !p.consume("(") {
			return r, fmt.Errorf("expected '(' after %q", w)
		}
		for {
			p.space()
			v := p.word()
			r.values = append(r.values, v)
			p.space()
			if p.consume(")") {
				return r, nil
			}
			if !p.consume(",") {
				return r, fmt.Errorf("expected ',' or ')' in value list of %q", key)
			}
		}
	}
	p.space()
	r.values = []string{p.word()}
	return r, nil
}

// check bounds the requirement's source, key and values.
func (r requirement) check() error {
	if len(r.source) > maxKeyName {
		return fmt.Errorf("label source of %d characters: at most %d", len(r.source), maxKeyName)
	}
	prefix, name := "", r.key
	if i := strings.LastIndexByte(r.key, '/'); i >= 0 {
		prefix, name = r.key[:i], r.key[i+1:]
	}
	switch {
	case len(name) == 0 || len(name) > maxKeyName:
		return fmt.Errorf("label key %s: name part of %d characters: want 1 to %d", abbrev(r.key), len(name), maxKeyName)
	case len(prefix) > maxKeyPrefix:
		return fmt.Errorf("label key %s: prefix of %d characters: at most %d", abbrev(r.key), len(prefix), maxKeyPrefix)
	}
	for _, v := range r.values {
		if len(v) > maxValue {
			return fmt.Errorf("label value %s of key %s: %d characters: at most %d", abbrev(v), abbrev(r.key), len(v), maxValue)
		}
	}
	return nil
}

// abbrev quotes s, shortened when long (errors echo what a client sent).
func abbrev(s string) string {
	if len(s) <= 40 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q...", s[:40])
}

// Matches reports whether every requirement holds for the labels.
func (s Selector) Matches(labels []string) bool {
	for _, r := range s.reqs {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

func (r requirement) matches(labels []string) bool {
	switch r.op {
	case opExists:
		return r.find(labels, func(string) bool { return true })
	case opNotExists:
		return !r.find(labels, func(string) bool { return true })
	case opEquals, opIn:
		return r.find(labels, func(v string) bool { return slices.Contains(r.values, v) })
	case opNotEquals, opNotIn:
		// As Kubernetes: a missing key satisfies != and notin.
		return !r.find(labels, func(v string) bool { return slices.Contains(r.values, v) })
	}
	return false
}

// find reports whether a label with the requirement's key (and source)
// has a value accepted by ok.
func (r requirement) find(labels []string, ok func(string) bool) bool {
	for _, l := range labels {
		src, rest := "", l
		if i := strings.IndexByte(l, ':'); i >= 0 {
			src, rest = l[:i], l[i+1:]
		}
		key, val := rest, ""
		if i := strings.IndexByte(rest, '='); i >= 0 {
			key, val = rest[:i], rest[i+1:]
		}
		if key == r.key && (r.source == "" || r.source == src) && ok(val) {
			return true
		}
	}
	return false
}
