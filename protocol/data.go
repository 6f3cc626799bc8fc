package protocol

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// Data is an opaque application payload. In the JSON encoding it is any JSON
// value, carried as is. Bytes that are not valid JSON (from a binary-encoding
// publisher) are carried to JSON clients as a base64 string; a publication
// says so with "b64": true. In the MessagePack encoding Data is a bin value.
type Data []byte

// MarshalJSON returns d itself when it is valid JSON, else a base64 string.
func (d Data) MarshalJSON() ([]byte, error) {
	if len(d) == 0 {
		return []byte("null"), nil
	}
	if json.Valid(d) {
		return d, nil
	}
	return appendJSONBase64(nil, d), nil
}

// UnmarshalJSON keeps a copy of the raw JSON value.
func (d *Data) UnmarshalJSON(b []byte) error {
	if d == nil {
		return errors.New("protocol: Data: UnmarshalJSON on nil pointer")
	}
	if string(b) == "null" {
		*d = nil
		return nil
	}
	*d = append((*d)[:0], b...)
	return nil
}

func appendJSONBase64(dst, src []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, src)
	return append(dst, '"')
}
