package bpfconst

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// covered are the #define prefixes every one of which must have a Go
// constant here (maps with a max_entries always must).
var covered = []string{"ID_", "DROP_", "REASON_", "OBS_", "EVENT_", "EV_F_", "MATCH_", "TRACE_", "EP_F_", "HOST_EP_ID"}

// TestMatchesC compares every constant of this package with the #define
// or map of bpf/ its comment names, and checks that each covered C
// constant has a Go one.
func TestMatchesC(t *testing.T) {
	cvals, err := parseC(filepath.Join("..", "..", "bpf"))
	if err != nil {
		t.Fatal(err)
	}
	gov, err := goConsts(".")
	if err != nil {
		t.Fatal(err)
	}
	mirrored := map[string]bool{}
	for _, g := range gov {
		if len(g.cNames) == 0 {
			t.Errorf("Go %s = %d names no C constant (want a line comment \"// C: NAME\")", g.name, g.value)
		}
		for _, cn := range g.cNames {
			mirrored[cn] = true
			cv, ok := cvals[cn]
			switch {
			case !ok:
				t.Errorf("Go %s = %d mirrors %s, which bpf/ does not define", g.name, g.value, cn)
			case cv != g.value:
				t.Errorf("Go %s = %d, but C %s = %d", g.name, g.value, cn, cv)
			}
		}
	}
	var missing []string
	for cn, cv := range cvals {
		if mirrored[cn] || !isCovered(cn) {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s = %d", cn, cv))
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("C %s has no Go constant in bpfconst", m)
	}
	if len(gov) < 60 || len(mirrored) < 60 {
		t.Fatalf("only %d Go constants and %d C names compared: is the parsing broken?", len(gov), len(mirrored))
	}
}

func isCovered(cName string) bool {
	if strings.HasPrefix(cName, "lumen_") || cName == "maglev_inner" {
		return true // a map
	}
	for _, p := range covered {
		if strings.HasPrefix(cName, p) {
			return true
		}
	}
	return false
}

type goConst struct {
	name   string
	value  uint64
	cNames []string
}

// goConsts reads the constants of the package in dir with the C names of
// their line comments.
func goConsts(dir string) ([]goConst, error) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, p := range pkgs {
		for _, f := range p.Files {
			files = append(files, f)
		}
	}
	info := &types.Info{Defs: map[*ast.Ident]types.Object{}}
	if _, err := (&types.Config{Importer: importer.Default()}).Check("bpfconst", fset, files, info); err != nil {
		return nil, err
	}
	var out []goConst
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				var cNames []string
				if vs.Comment != nil {
					if _, list, ok := strings.Cut(vs.Comment.Text(), "C:"); ok {
						for _, n := range strings.Split(list, ",") {
							cNames = append(cNames, strings.TrimSpace(n))
						}
					}
				}
				for _, id := range vs.Names {
					c := info.Defs[id].(*types.Const)
					v, ok := constant.Uint64Val(c.Val())
					if !ok {
						return nil, fmt.Errorf("%s: not an unsigned integer", id.Name)
					}
					out = append(out, goConst{name: id.Name, value: v, cNames: cNames})
				}
			}
		}
	}
	return out, nil
}

var (
	defineRE  = regexp.MustCompile(`(?m)^#define[ \t]+(\w+)[ \t]+(.*?)[ \t]*(?:/\*.*)?$`)
	mapRE     = regexp.MustCompile(`(?s)struct[ \t]*(\w*)[ \t]*\{([^{}]*)\}[ \t]*(\w*)`)
	maxEntRE  = regexp.MustCompile(`__uint\(max_entries,\s*([^;]*)\);`)
	blockCmRE = regexp.MustCompile(`(?s)/\*.*?\*/`)
)

// parseC reads the integer #defines and the maps' max_entries (under the
// map's name, or the struct tag of an inner map) of bpf/*.c and
// bpf/lib/*.h. A name defined twice must have one value.
func parseC(dir string) (map[string]uint64, error) {
	var paths []string
	for _, g := range []string{"*.c", "lib/*.h"} {
		m, err := filepath.Glob(filepath.Join(dir, g))
		if err != nil {
			return nil, err
		}
		paths = append(paths, m...)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no C sources in %s", dir)
	}
	type def struct{ expr, file string }
	defs := map[string][]def{}
	maps := map[string]def{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		src := string(b)
		for _, m := range defineRE.FindAllStringSubmatch(src, -1) {
			defs[m[1]] = append(defs[m[1]], def{m[2], p})
		}
		for _, m := range mapRE.FindAllStringSubmatch(blockCmRE.ReplaceAllString(src, ""), -1) {
			me := maxEntRE.FindStringSubmatch(m[2])
			if me == nil {
				continue
			}
			name := m[3]
			if name == "" || name == "SEC" {
				name = m[1]
			}
			if name == "" {
				return nil, fmt.Errorf("%s: a map with max_entries %s has no name", p, me[1])
			}
			maps[name] = def{me[1], p}
		}
	}
	vals := map[string]uint64{}
	var lookup func(string) (uint64, bool)
	lookup = func(name string) (uint64, bool) {
		ds := defs[name]
		if len(ds) == 0 {
			return 0, false
		}
		v, err := evalC(ds[0].expr, lookup)
		return v, err == nil
	}
	for name, ds := range defs {
		var first uint64
		for i, d := range ds {
			v, err := evalC(d.expr, lookup)
			if err != nil {
				if isCovered(name) {
					return nil, fmt.Errorf("%s: #define %s %s: %v", d.file, name, d.expr, err)
				}
				break // not an integer constant (a macro, an attribute)
			}
			if i == 0 {
				first = v
			} else if v != first {
				return nil, fmt.Errorf("%s is %d in %s but %d in %s", name, first, ds[0].file, v, d.file)
			}
			vals[name] = v
		}
	}
	for name, d := range maps {
		v, err := evalC(d.expr, lookup)
		if err != nil {
			return nil, fmt.Errorf("%s: max_entries of %s: %v", d.file, name, err)
		}
		vals[name] = v
	}
	return vals, nil
}

// evalC evaluates an integer expression of numbers, defined names,
// parentheses, <<, |, + and *, the operators bpf/ uses in constants
// (binding loosest to tightest: |, <<, +, *).
func evalC(expr string, lookup func(string) (uint64, bool)) (uint64, error) {
	toks := regexp.MustCompile(`0[xX][0-9a-fA-F]+|\d+|\w+|<<|[()|+*]|\S`).FindAllString(expr, -1)
	pos := 0
	var level func(int) (uint64, error)
	ops := []string{"|", "<<", "+", "*"}
	level = func(l int) (uint64, error) {
		if l == len(ops) {
			if pos >= len(toks) {
				return 0, fmt.Errorf("unexpected end")
			}
			tok := toks[pos]
			pos++
			switch {
			case tok == "(":
				v, err := level(0)
				if err != nil {
					return 0, err
				}
				if pos >= len(toks) || toks[pos] != ")" {
					return 0, fmt.Errorf("missing )")
				}
				pos++
				return v, nil
			case tok[0] >= '0' && tok[0] <= '9':
				return strconv.ParseUint(strings.TrimRight(tok, "uUlL"), 0, 64)
			default:
				if v, ok := lookup(tok); ok {
					return v, nil
				}
				return 0, fmt.Errorf("unknown %q", tok)
			}
		}
		v, err := level(l + 1)
		if err != nil {
			return 0, err
		}
		for pos < len(toks) && toks[pos] == ops[l] {
			pos++
			w, err := level(l + 1)
			if err != nil {
				return 0, err
			}
			switch ops[l] {
			case "|":
				v |= w
			case "<<":
				v <<= w
			case "+":
				v += w
			case "*":
				v *= w
			}
		}
		return v, nil
	}
	v, err := level(0)
	if err == nil && pos != len(toks) {
		err = fmt.Errorf("unexpected %q", toks[pos])
	}
	return v, err
}

// The checker must see a difference: a wrong value, a C constant without
// a Go one, and conflicting definitions.
func TestParseCDetectsDifferences(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("lib/a.h", "#define ID_HOST 1\n#define EV_F_X (1 << 3) /* x */\n#define N 4\n"+
		"struct {\n\t__uint(max_entries, N * 2);\n} lumen_m SEC(\".maps\");\nstruct inner {\n\t__uint(max_entries, 0x10);\n};\n")
	write("x.c", "#define ID_HOST 1\n")
	got, err := parseC(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"ID_HOST": 1, "EV_F_X": 8, "N": 4, "lumen_m": 8, "inner": 16}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	write("x.c", "#define ID_HOST 2\n")
	if _, err := parseC(dir); err == nil || !strings.Contains(err.Error(), "ID_HOST") {
		t.Errorf("conflicting definitions: error %v", err)
	}
	if got := isCovered("DROP_NEW"); !got {
		t.Error("a new DROP_ reason is not covered")
	}
}
