package resource

import (
	"bytes"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// DocError is a problem with one document of a file; each line of its
// message starts with "source:line: ".
type DocError struct {
	Source string
	Line   int
	Err    error
}

func (e *DocError) Error() string {
	prefix := fmt.Sprintf("%s:%d: ", e.Source, e.Line)
	return prefix + strings.ReplaceAll(e.Err.Error(), "\n", "\n"+prefix)
}

func (e *DocError) Unwrap() error { return e.Err }

// Decode reads one or more YAML (or JSON) documents separated by "---" lines
// and returns their objects, validated and defaulted. Empty documents are
// skipped. If any document is bad it returns an error describing every bad
// document and no objects, so that nothing of a bad file gets applied.
// source names the input in errors (a file name, or "<stdin>").
func (r *Registry) Decode(source string, data []byte) ([]Object, error) {
	var objs []Object
	var errs []string
	for _, doc := range splitDocuments(data) {
		obj, err := r.decodeDocument(doc.text)
		if err != nil {
			errs = append(errs, (&DocError{Source: source, Line: doc.line, Err: err}).Error())
			continue
		}
		if obj != nil {
			objs = append(objs, *obj)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return objs, nil
}

// decodeDocument returns nil, nil for an empty document.
func (r *Registry) decodeDocument(doc []byte) (*Object, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil
	}
	obj, errs := parseObject(js)
	if obj == nil || len(errs) > 0 {
		return nil, objectError(obj, errs)
	}
	if err := r.Validate(obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// Validate checks obj like the API server would and fills in defaults (the
// namespace of namespaced kinds, kind-specific defaults).
func (r *Registry) Validate(obj *Object) error {
	if obj.APIVersion == "" || obj.Kind == "" {
		var errs ErrorList
		if obj.APIVersion == "" {
			errs.add(Required("apiVersion"))
		}
		if obj.Kind == "" {
			errs.add(Required("kind"))
		}
		return objectError(obj, errs)
	}
	kind, err := r.LookupKind(obj.APIVersion, obj.Kind)
	if err != nil {
		return err
	}
	var errs ErrorList
	md := &obj.Metadata
	if kind.Namespaced {
		if md.Namespace == "" {
			md.Namespace = "default"
		}
		errs.add(DNSLabel("metadata.namespace", md.Namespace))
	} else {
		md.Namespace = "" // the API server ignores it too
	}
	if kind.NameIsLabel {
		errs.add(DNSLabel("metadata.name", md.Name))
	} else {
		errs.add(DNSSubdomain("metadata.name", md.Name))
	}
	errs = append(errs, Labels("metadata.labels", md.Labels)...)
	for _, k := range sortedKeys(md.Annotations) {
		errs.add(QualifiedName("metadata.annotations", k))
	}
	if !kind.allowsField("status") {
		// As kubectl apply: status is not desired state. A kind may list
		// "status" in Fields when controllers set it (Service's load
		// balancer ingress); its Validate then checks it.
		delete(obj.Other, "status")
	}
	for _, f := range sortedKeys(obj.Other) {
		if !kind.allowsField(f) {
			errs.add(Unknown("", f))
		}
	}
	if len(obj.Spec) > 0 && !kind.allowsField("spec") {
		errs.add(Unknown("", "spec"))
	}
	if kind.Validate != nil {
		errs = append(errs, kind.Validate(obj)...)
	}
	if len(errs) > 0 {
		return objectError(obj, errs)
	}
	return nil
}

func objectError(obj *Object, errs ErrorList) error {
	if obj == nil {
		obj = &Object{}
	}
	return &ObjectError{Object: obj.String(), Errs: errs}
}

type document struct {
	line int // first line of content, 1-based
	text []byte
}

// splitDocuments splits YAML at "---" lines. A block scalar cannot contain a
// line starting with "---" at column 0, so a line-based split is exact.
func splitDocuments(data []byte) []document {
	var docs []document
	cur := document{line: 1}
	var buf bytes.Buffer
	flush := func() {
		cur.text = bytes.Clone(buf.Bytes())
		docs = append(docs, cur)
		buf.Reset()
	}
	started := false // cur.line points at content
	for i, line := range strings.SplitAfter(string(data), "\n") {
		trimmed := strings.TrimRight(line, " \t\r\n")
		if rest, ok := strings.CutPrefix(trimmed, "---"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			flush()
			cur, started = document{line: i + 1}, false
			line = rest + "\n"
		} else if trimmed == "..." {
			continue
		}
		if !started {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				cur.line, started = i+1, true
			}
		}
		buf.WriteString(line)
	}
	flush()
	return docs
}
