package loadbalancer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/resource"
)

// errs collects field errors, skipping nils.
type errs resource.ErrorList

func (l *errs) add(es ...*fielderr.Error) {
	for _, e := range es {
		if e != nil {
			*l = append(*l, e)
		}
	}
}

func (l *errs) addAll(es resource.ErrorList) { l.add(es...) }

// decodeStrict decodes the JSON at path into v, rejecting unknown fields,
// and words failures as field errors (like the resource package does for
// its own kinds).
func decodeStrict(path string, data []byte, v any) *fielderr.Error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the value")
	}
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			path += "." + te.Field
		}
		return &fielderr.Error{Path: path, Msg: fmt.Sprintf("invalid value: must be %s, not %s", typeName(te.Type), te.Value)}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return &fielderr.Error{Path: path, Msg: "unknown field " + f}
	}
	return &fielderr.Error{Path: path, Msg: "invalid value: " + strings.TrimPrefix(err.Error(), "json: ")}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint16, reflect.Uint32:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice:
		return "a list"
	case reflect.Pointer:
		return typeName(t.Elem())
	}
	return t.String()
}

// decodeList decodes a JSON list element by element, so that an error names
// the element's index ("spec.ports[1].port").
func decodeList[T any](path string, data []byte, el *errs) []T {
	if isNull(data) {
		return nil
	}
	var raws []json.RawMessage
	if e := decodeStrict(path, data, &raws); e != nil {
		el.add(e)
		return nil
	}
	out := make([]T, len(raws))
	for i, r := range raws {
		el.add(decodeStrict(fmt.Sprintf("%s[%d]", path, i), r, &out[i]))
	}
	return out
}

func isNull(data []byte) bool {
	return len(data) == 0 || bytes.Equal(bytes.TrimSpace(data), []byte("null"))
}

// IntOrString is Kubernetes' int-or-string (a service's targetPort: a
// number or a container port name). A JSON value that is neither is kept
// as Invalid so that validation can name the field.
type IntOrString struct {
	IntVal  int32
	StrVal  string
	IsStr   bool
	Invalid string // the JSON text of a value that is neither, "" if fine
}

// FromInt is an integer IntOrString.
func FromInt(i int32) IntOrString { return IntOrString{IntVal: i} }

// FromString is a string IntOrString.
func FromString(s string) IntOrString { return IntOrString{StrVal: s, IsStr: true} }

// IsZero reports an absent value (0 or "").
func (v IntOrString) IsZero() bool { return v.Invalid == "" && v.IntVal == 0 && v.StrVal == "" }

// String is the number or the name.
func (v IntOrString) String() string {
	if v.IsStr {
		return v.StrVal
	}
	return fmt.Sprint(v.IntVal)
}

// MarshalJSON writes a number or a string.
func (v IntOrString) MarshalJSON() ([]byte, error) {
	if v.IsStr {
		return json.Marshal(v.StrVal)
	}
	return json.Marshal(v.IntVal)
}

// UnmarshalJSON accepts any JSON value; see Invalid.
func (v *IntOrString) UnmarshalJSON(data []byte) error {
	*v = IntOrString{}
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &v.StrVal); err != nil {
			return err
		}
		v.IsStr = true
		return nil
	}
	if isNull(data) {
		return nil
	}
	var i int32
	if err := json.Unmarshal(data, &i); err != nil {
		v.Invalid = string(data)
		if len(v.Invalid) > 64 {
			v.Invalid = v.Invalid[:64] + "..."
		}
	} else {
		v.IntVal = i
	}
	return nil
}

// parseIP reads an address the way Kubernetes validation wants it: plain
// IPv4 or IPv6 (no zone, no IPv4-mapped IPv6 form).
func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errors.New("must be a valid IP address")
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("must be a valid IP address without a zone")
	}
	if a.Is4In6() {
		return netip.Addr{}, errors.New("must be a plain IPv4 or IPv6 address, not IPv4-mapped IPv6")
	}
	return a, nil
}

// nonSpecialIP checks an address that traffic can be sent to (like the API
// server's ValidateNonSpecialIP for endpoints and external IPs).
func nonSpecialIP(path, s string) *fielderr.Error {
	a, err := parseIP(s)
	if err != nil {
		return resource.Invalid(path, s, err.Error())
	}
	switch {
	case a.IsUnspecified():
		return resource.Invalid(path, s, "may not be unspecified (0.0.0.0 or ::)")
	case a.IsLoopback():
		return resource.Invalid(path, s, "may not be in the loopback range (127.0.0.0/8, ::1/128)")
	case a.IsLinkLocalUnicast():
		return resource.Invalid(path, s, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")
	case a.IsLinkLocalMulticast(), a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return resource.Invalid(path, s, "may not be in the multicast range (224.0.0.0/4, ff00::/8)")
	}
	return nil
}

// family is "IPv4" or "IPv6".
func family(a netip.Addr) string {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}
