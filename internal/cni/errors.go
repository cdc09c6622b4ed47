package cni

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/lumen-net/lumen/internal/api"
)

// Plugin-specific CNI error codes (the spec reserves 100 and up for plugins).
const (
	// ErrAgent: the agent answered, but refused or failed the request.
	ErrAgent uint = 100
	// ErrDuplicateAdd: ADD for a container the agent already has an endpoint for.
	ErrDuplicateAdd uint = 101
	// ErrInterface: creating, configuring or removing an interface failed.
	ErrInterface uint = 102
	// ErrCheck: CHECK found the attachment incomplete.
	ErrCheck uint = 103
)

func newError(code uint, format string, a ...any) *types.Error {
	return types.NewError(code, fmt.Sprintf(format, a...), "")
}

// agentError turns a failed agent call into a CNI error: an unreachable agent
// is "try again later" (11) so that runtimes retry, anything else is ErrAgent.
func agentError(doing string, err error) *types.Error {
	var ue *api.UnreachableError
	if errors.As(err, &ue) {
		return newError(types.ErrTryAgainLater, "%s: %v", doing, err)
	}
	return newError(ErrAgent, "%s: agent refused: %v", doing, err)
}

// asCNIError makes sure skel prints a well-formed error with a code; errors
// that were not classified are internal errors.
func asCNIError(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
