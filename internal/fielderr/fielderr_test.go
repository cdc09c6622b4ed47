package fielderr

import (
	"errors"
	"fmt"
	"testing"
)

func TestError(t *testing.T) {
	for _, c := range []struct {
		e    Error
		want string
	}{
		{Error{Path: "spec.ports[1].port", Msg: "invalid value 70000: must be between 1 and 65535"}, "spec.ports[1].port: invalid value 70000: must be between 1 and 65535"},
		{Error{Msg: "empty document"}, "empty document"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
		if got := (&c.e).Error(); got != c.want {
			t.Errorf("(*Error).Error() = %q, want %q", got, c.want)
		}
	}
	if got := New("pods[2].node", "unknown node %q", "n9").Error(); got != `pods[2].node: unknown node "n9"` {
		t.Errorf("New: %q", got)
	}
	var fe *Error
	if err := fmt.Errorf("wrapped: %w", New("a", "b")); !errors.As(err, &fe) || fe.Path != "a" {
		t.Errorf("errors.As through a wrap: %v", fe)
	}
}
