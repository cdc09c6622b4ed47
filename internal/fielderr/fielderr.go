// Package fielderr is the one error type for a problem with one field of
// an input (a resource, a policy, a lab topology, a flow filter), worded
// like the Kubernetes API server: the field's path, then what is wrong.
package fielderr

import "fmt"

// Error is one problem with one field:
// "spec.ports[1].port: invalid value 70000: must be between 1 and 65535".
// Both Error and *Error are errors.
type Error struct {
	Path string // "spec.ports[1].port"; empty for the whole input
	Msg  string
}

func (e Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// New is an Error at path with a formatted message.
func New(path, format string, args ...any) *Error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}
