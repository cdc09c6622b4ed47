package resource

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/lumen-net/lumen/internal/fielderr"
)

// ErrorList collects the field errors of one object.
type ErrorList []*fielderr.Error

// Invalid reports a bad value.
func Invalid(path string, value any, detail string) *fielderr.Error {
	return &fielderr.Error{Path: path, Msg: fmt.Sprintf("invalid value %s: %s", show(value), detail)}
}

// Required reports a missing value.
func Required(path string) *fielderr.Error { return &fielderr.Error{Path: path, Msg: "required value"} }

// Unsupported reports a value outside a fixed set.
func Unsupported(path string, value any, supported ...string) *fielderr.Error {
	q := make([]string, len(supported))
	for i, s := range supported {
		q[i] = fmt.Sprintf("%q", s)
	}
	return &fielderr.Error{Path: path, Msg: fmt.Sprintf("unsupported value %s: supported values: %s", show(value), strings.Join(q, ", "))}
}

// Duplicate reports a value that must be unique.
func Duplicate(path string, value any) *fielderr.Error {
	return &fielderr.Error{Path: path, Msg: "duplicate value " + show(value)}
}

// Unknown reports a field the kind does not have.
func Unknown(path, field string) *fielderr.Error {
	return &fielderr.Error{Path: path, Msg: fmt.Sprintf("unknown field %q", field)}
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

// ObjectError is the validation failure of one object; every line of its
// message names the object, e.g. "Pod default/web: spec.containers: required value".
type ObjectError struct {
	Object string // "Pod default/web"
	Errs   ErrorList
}

func (e *ObjectError) Error() string {
	lines := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		lines[i] = e.Object + ": " + fe.Error()
	}
	return strings.Join(lines, "\n")
}

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	qualifiedName    = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	ianaSvcName      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	hasLetter        = regexp.MustCompile(`[a-z]`)
)

// DNSLabel checks an RFC 1123 label (namespace names, container names).
func DNSLabel(path, v string) *fielderr.Error {
	switch {
	case v == "":
		return Required(path)
	case len(v) > 63:
		return Invalid(path, v, "must be no more than 63 characters")
	case !dns1123Label.MatchString(v):
		return Invalid(path, v, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")
	}
	return nil
}

// DNSSubdomain checks an RFC 1123 subdomain (most object names).
func DNSSubdomain(path, v string) *fielderr.Error {
	switch {
	case v == "":
		return Required(path)
	case len(v) > 253:
		return Invalid(path, v, "must be no more than 253 characters")
	case !dns1123Subdomain.MatchString(v):
		return Invalid(path, v, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
	}
	return nil
}

// QualifiedName checks a label or annotation key: [prefix/]name.
func QualifiedName(path, key string) *fielderr.Error {
	name := key
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		prefix := key[:i]
		name = key[i+1:]
		if prefix == "" || len(prefix) > 253 || !dns1123Subdomain.MatchString(prefix) {
			return Invalid(path, key, "prefix part must be a lowercase RFC 1123 subdomain")
		}
	}
	switch {
	case name == "":
		return Invalid(path, key, "name part must be non-empty")
	case len(name) > 63:
		return Invalid(path, key, "name part must be no more than 63 characters")
	case !qualifiedName.MatchString(name):
		return Invalid(path, key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
	}
	return nil
}

// LabelValue checks a label value (may be empty).
func LabelValue(path, v string) *fielderr.Error {
	switch {
	case v == "":
		return nil
	case len(v) > 63:
		return Invalid(path, v, "must be no more than 63 characters")
	case !qualifiedName.MatchString(v):
		return Invalid(path, v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
	}
	return nil
}

// Labels checks a label map.
func Labels(path string, labels map[string]string) ErrorList {
	var errs ErrorList
	for _, k := range sortedKeys(labels) {
		if e := QualifiedName(path, k); e != nil {
			errs = append(errs, e)
		}
		if e := LabelValue(path+"["+k+"]", labels[k]); e != nil {
			errs = append(errs, e)
		}
	}
	return errs
}

// PortName checks an IANA service name (container port names).
func PortName(path, v string) *fielderr.Error {
	switch {
	case len(v) > 15:
		return Invalid(path, v, "must be no more than 15 characters")
	case !ianaSvcName.MatchString(v):
		return Invalid(path, v, "must contain only lower case alphanumeric characters or '-', and start and end with an alphanumeric character")
	case strings.Contains(v, "--"):
		return Invalid(path, v, "must not contain consecutive hyphens")
	case !hasLetter.MatchString(v):
		return Invalid(path, v, "must contain at least one letter")
	}
	return nil
}

// Port checks a port number.
func Port(path string, p int64) *fielderr.Error {
	if p < 1 || p > 65535 {
		return Invalid(path, p, "must be between 1 and 65535")
	}
	return nil
}

// add appends the non-nil errors.
func (l *ErrorList) add(errs ...*fielderr.Error) {
	for _, e := range errs {
		if e != nil {
			*l = append(*l, e)
		}
	}
}
