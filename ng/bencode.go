package ng

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
)

// Limits the bencode decoder enforces.
const (
	// MaxDepth is the deepest nesting of lists and dictionaries Decode
	// (and Encode) accepts.
	MaxDepth = 64
	// MaxStringLen is the longest byte string Decode accepts; an NG
	// message is never longer than MaxMessageSize anyway.
	MaxStringLen = 64 << 10
)

// ErrUnexpectedEOF is wrapped by Decode's error when the input ends
// inside a value: more bytes could make it valid (the TCP reader reads
// on), unlike a syntax error.
var ErrUnexpectedEOF = errors.New("bencode: unexpected end of input")

// SyntaxError is a malformed bencode input.
type SyntaxError struct {
	Offset int // byte offset of the offending input
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("bencode: %s at offset %d", e.Msg, e.Offset)
}

// Decode decodes exactly one bencode value that must fill b. Byte strings
// decode as string, integers as int64, lists as []any (never nil) and
// dictionaries as map[string]any. It is strict: leading zeros, "-0",
// integers beyond int64, duplicate dictionary keys, nesting deeper than
// MaxDepth, strings longer than MaxStringLen and bytes after the value
// are errors. Dictionary keys need not be sorted.
func Decode(b []byte) (any, error) {
	v, n, err := decodePrefix(b)
	if err != nil {
		return nil, err
	}
	if n != len(b) {
		return nil, &SyntaxError{Offset: n, Msg: "trailing data after value"}
	}
	return v, nil
}

// decodePrefix decodes the one value at the start of b and says how many
// bytes it took.
func decodePrefix(b []byte) (any, int, error) {
	d := decoder{b: b}
	v, err := d.value()
	if err != nil {
		return nil, 0, err
	}
	return v, d.pos, nil
}

type decoder struct {
	b     []byte
	pos   int
	depth int
}

func (d *decoder) eof() error {
	return fmt.Errorf("%w at offset %d", ErrUnexpectedEOF, d.pos)
}

func (d *decoder) errorf(off int, format string, args ...any) error {
	return &SyntaxError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func (d *decoder) value() (any, error) {
	if d.pos >= len(d.b) {
		return nil, d.eof()
	}
	switch c := d.b[d.pos]; {
	case c == 'i':
		return d.integer()
	case c >= '0' && c <= '9':
		return d.str()
	case c == 'l':
		if err := d.enter(); err != nil {
			return nil, err
		}
		d.pos++
		list := []any{}
		for {
			if d.pos >= len(d.b) {
				return nil, d.eof()
			}
			if d.b[d.pos] == 'e' {
				d.pos++
				d.depth--
				return list, nil
			}
			v, err := d.value()
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
	case c == 'd':
		if err := d.enter(); err != nil {
			return nil, err
		}
		d.pos++
		dict := map[string]any{}
		for {
			if d.pos >= len(d.b) {
				return nil, d.eof()
			}
			c := d.b[d.pos]
			if c == 'e' {
				d.pos++
				d.depth--
				return dict, nil
			}
			if c < '0' || c > '9' {
				return nil, d.errorf(d.pos, "dictionary key is not a string (byte %q)", c)
			}
			off := d.pos
			k, err := d.str()
			if err != nil {
				return nil, err
			}
			if _, dup := dict[k]; dup {
				return nil, d.errorf(off, "duplicate dictionary key %q", k)
			}
			v, err := d.value()
			if err != nil {
				return nil, err
			}
			dict[k] = v
		}
	default:
		return nil, d.errorf(d.pos, "unexpected byte %q", c)
	}
}

func (d *decoder) enter() error {
	if d.depth >= MaxDepth {
		return d.errorf(d.pos, "nesting deeper than %d", MaxDepth)
	}
	d.depth++
	return nil
}

// integer decodes i<digits>e at d.pos.
func (d *decoder) integer() (int64, error) {
	start := d.pos
	d.pos++ // 'i'
	digits := d.pos
	if d.pos < len(d.b) && d.b[d.pos] == '-' {
		digits++
		d.pos++
	}
	for d.pos < len(d.b) && d.b[d.pos] >= '0' && d.b[d.pos] <= '9' {
		d.pos++
		if d.pos-digits > 20 {
			return 0, d.errorf(start, "integer too long")
		}
	}
	if d.pos >= len(d.b) {
		return 0, d.eof()
	}
	if d.b[d.pos] != 'e' {
		return 0, d.errorf(d.pos, "invalid byte %q in integer", d.b[d.pos])
	}
	num := d.b[digits:d.pos]
	switch {
	case len(num) == 0:
		return 0, d.errorf(start, "integer without digits")
	case num[0] == '0' && len(num) > 1:
		return 0, d.errorf(start, "integer with leading zero")
	case num[0] == '0' && digits > start+1:
		return 0, d.errorf(start, "negative zero")
	}
	n, err := strconv.ParseInt(string(d.b[start+1:d.pos]), 10, 64)
	if err != nil {
		return 0, d.errorf(start, "integer out of range")
	}
	d.pos++ // 'e'
	return n, nil
}

// str decodes <length>:<bytes> at d.pos.
func (d *decoder) str() (string, error) {
	start := d.pos
	n := 0
	for d.pos < len(d.b) && d.b[d.pos] >= '0' && d.b[d.pos] <= '9' {
		if d.pos > start && d.b[start] == '0' {
			return "", d.errorf(start, "string length with leading zero")
		}
		n = n*10 + int(d.b[d.pos]-'0')
		if n > MaxStringLen {
			return "", d.errorf(start, "string longer than %d bytes", MaxStringLen)
		}
		d.pos++
	}
	if d.pos >= len(d.b) {
		return "", d.eof()
	}
	if d.b[d.pos] != ':' {
		return "", d.errorf(d.pos, "invalid byte %q in string length", d.b[d.pos])
	}
	d.pos++
	if len(d.b)-d.pos < n {
		d.pos = len(d.b)
		return "", d.eof()
	}
	s := string(d.b[d.pos : d.pos+n])
	d.pos += n
	return s, nil
}

// Encode encodes v as bencode. It takes strings and []byte, all integer
// types, slices and arrays, and maps with string keys (written in sorted
// key order, as bencode requires); anything else, nil included, is an
// error, as is nesting deeper than MaxDepth.
func Encode(v any) ([]byte, error) {
	var e encoder
	if err := e.encode(v, 0); err != nil {
		return nil, err
	}
	return e.buf, nil
}

type encoder struct{ buf []byte }

func (e *encoder) str(s string) {
	e.buf = strconv.AppendInt(e.buf, int64(len(s)), 10)
	e.buf = append(e.buf, ':')
	e.buf = append(e.buf, s...)
}

func (e *encoder) int(n int64) {
	e.buf = append(e.buf, 'i')
	e.buf = strconv.AppendInt(e.buf, n, 10)
	e.buf = append(e.buf, 'e')
}

func (e *encoder) encode(v any, depth int) error {
	switch v := v.(type) {
	case string:
		e.str(v)
		return nil
	case []byte:
		e.str(string(v))
		return nil
	case int:
		e.int(int64(v))
		return nil
	case int64:
		e.int(v)
		return nil
	case uint64:
		e.buf = append(e.buf, 'i')
		e.buf = strconv.AppendUint(e.buf, v, 10)
		e.buf = append(e.buf, 'e')
		return nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		e.int(rv.Int())
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		e.buf = append(e.buf, 'i')
		e.buf = strconv.AppendUint(e.buf, rv.Uint(), 10)
		e.buf = append(e.buf, 'e')
		return nil
	case reflect.String:
		e.str(rv.String())
		return nil
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			e.str(string(rv.Bytes()))
			return nil
		}
		if depth >= MaxDepth {
			return fmt.Errorf("bencode: nesting deeper than %d", MaxDepth)
		}
		e.buf = append(e.buf, 'l')
		for i := range rv.Len() {
			if err := e.encode(rv.Index(i).Interface(), depth+1); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, 'e')
		return nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("bencode: cannot encode map with %s keys", rv.Type().Key())
		}
		if depth >= MaxDepth {
			return fmt.Errorf("bencode: nesting deeper than %d", MaxDepth)
		}
		keys := rv.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int {
			switch x, y := a.String(), b.String(); {
			case x < y:
				return -1
			case x > y:
				return 1
			}
			return 0
		})
		e.buf = append(e.buf, 'd')
		for _, k := range keys {
			e.str(k.String())
			if err := e.encode(rv.MapIndex(k).Interface(), depth+1); err != nil {
				return fmt.Errorf("%w (key %q)", err, k.String())
			}
		}
		e.buf = append(e.buf, 'e')
		return nil
	}
	return fmt.Errorf("bencode: cannot encode %T", v)
}
