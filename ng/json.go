package ng

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// rtpengine takes a JSON object in place of the bencoded dictionary after
// the cookie, tells the two apart by the first byte ('{' or 'd'), and
// answers in the form the request came in (control_ng_process in its
// control_ng.c). A JSON request here decodes into the values
// Decode gives for bencode, so ParseRequest sees no difference.

// isJSON says whether an NG body is a JSON object rather than bencode.
func isJSON(body []byte) bool { return len(body) > 0 && body[0] == '{' }

// DecodeJSON decodes one JSON object that must fill b into the types
// Decode returns: strings as string, integers as int64, true and false
// as 1 and 0 (rtpengine reads JSON booleans as integers), arrays as []any
// and objects as map[string]any. The bencode limits hold: nesting deeper
// than MaxDepth, strings longer than MaxStringLen and duplicate keys are
// errors; so are null, numbers that are not int64 integers, and bytes
// after the object.
func DecodeJSON(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := jsonValue(dec, 0)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("json: trailing data after value at offset %d", dec.InputOffset())
	}
	d, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("json: not an object")
	}
	return d, nil
}

func jsonValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := jsonToken(dec)
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case string:
		if len(t) > MaxStringLen {
			return nil, fmt.Errorf("string longer than %d bytes at offset %d", MaxStringLen, dec.InputOffset())
		}
		return t, nil
	case json.Number:
		n, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s is not an integer at offset %d", t, dec.InputOffset())
		}
		return n, nil
	case bool:
		if t {
			return int64(1), nil
		}
		return int64(0), nil
	case nil:
		return nil, fmt.Errorf("null at offset %d", dec.InputOffset())
	case json.Delim:
		if depth >= MaxDepth {
			return nil, fmt.Errorf("nesting deeper than %d at offset %d", MaxDepth, dec.InputOffset())
		}
		if t == '[' {
			list := []any{}
			for dec.More() {
				v, err := jsonValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := jsonToken(dec) // ']'
			return list, err
		}
		dict := map[string]any{}
		for dec.More() {
			kt, err := jsonToken(dec)
			if err != nil {
				return nil, err
			}
			k, ok := kt.(string)
			if !ok { // the decoder lets only strings be keys; be safe
				return nil, fmt.Errorf("key %v is not a string", kt)
			}
			if _, dup := dict[k]; dup {
				return nil, fmt.Errorf("duplicate key %q at offset %d", k, dec.InputOffset())
			}
			v, err := jsonValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			dict[k] = v
		}
		_, err := jsonToken(dec) // '}'
		return dict, err
	}
	return nil, fmt.Errorf("unexpected %v at offset %d", tok, dec.InputOffset())
}

// jsonToken is dec.Token inside a value, where the input ending is an
// unexpected end.
func jsonToken(dec *json.Decoder) (json.Token, error) {
	tok, err := dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return tok, err
}

// EncodeJSON encodes a reply built for Encode as JSON: byte slices (the
// SDP) as strings rather than encoding/json's base64, keys sorted.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // SDP and addresses stay readable
	if err := enc.Encode(jsonable(v, 0)); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// jsonable copies v with every []byte turned into a string; past
// MaxDepth it leaves v as is (the replies built here are shallow).
func jsonable(v any, depth int) any {
	if depth > MaxDepth {
		return v
	}
	switch v := v.(type) {
	case []byte:
		return string(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = jsonable(x, depth+1)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = jsonable(x, depth+1)
		}
		return out
	}
	return v
}

// jsonFrameLen says how long the JSON value at the start of b is, for
// framing on TCP; the error wraps ErrUnexpectedEOF when b holds only
// part of one.
func jsonFrameLen(b []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("json: %w", ErrUnexpectedEOF)
		}
		return 0, fmt.Errorf("json: %w", err)
	}
	return int(dec.InputOffset()), nil
}
