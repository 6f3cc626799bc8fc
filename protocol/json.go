package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

type jsonCodec struct{}

func (jsonCodec) Name() string { return SubprotocolJSON }
func (jsonCodec) Binary() bool { return false }

func (jsonCodec) DecodeCommand(b []byte, cmd *Command) error {
	if err := decodeJSONStrict(b, cmd); err != nil {
		return err
	}
	return nil
}

func (jsonCodec) AppendCommand(dst []byte, cmd *Command) ([]byte, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func (jsonCodec) DecodeServerMessage(b []byte, m *ServerMessage) error {
	return decodeJSONStrict(b, m)
}

func (jsonCodec) AppendServerMessage(dst []byte, m *ServerMessage) ([]byte, error) {
	if m.Pub != nil && m.ID == 0 {
		return jsonCodec{}.AppendPublicationPush(dst, m.Pub)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func (jsonCodec) AppendPublicationPush(dst []byte, p *Publication) ([]byte, error) {
	dst = append(dst, `{"pub":`...)
	dst = appendPublicationJSON(dst, p)
	return append(dst, '}'), nil
}

// decodeJSONStrict decodes one JSON object and rejects trailing data.
func decodeJSONStrict(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// MarshalJSON encodes the publication with the fast appender; data that is
// not valid JSON goes out as base64 with "b64": true.
func (p *Publication) MarshalJSON() ([]byte, error) {
	return appendPublicationJSON(make([]byte, 0, 64+len(p.Data)), p), nil
}

// UnmarshalJSON decodes a publication, undoing the base64 form of binary data.
func (p *Publication) UnmarshalJSON(b []byte) error {
	type plain Publication
	var aux struct {
		plain
		B64 bool `json:"b64"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*p = Publication(aux.plain)
	if p.Delta && !aux.B64 && len(p.Data) > 0 && p.Data[0] == '"' {
		var s string
		if err := json.Unmarshal(p.Data, &s); err != nil {
			return fmt.Errorf("delta data: %w", err)
		}
		p.Data = []byte(s)
	}
	if aux.B64 {
		var s string
		if err := json.Unmarshal(p.Data, &s); err != nil {
			return fmt.Errorf("b64 data: %w", err)
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("b64 data: %w", err)
		}
		p.Data = raw
	}
	return nil
}

func appendPublicationJSON(dst []byte, p *Publication) []byte {
	dst = append(dst, '{')
	if p.Channel != "" {
		dst = append(dst, `"channel":`...)
		dst = appendJSONString(dst, p.Channel)
		dst = append(dst, ',')
	}
	if p.Offset != 0 {
		dst = append(dst, `"offset":`...)
		dst = strconv.AppendUint(dst, p.Offset, 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"data":`...)
	switch {
	case len(p.Data) == 0:
		dst = append(dst, "null"...)
	case p.Delta && utf8.Valid(p.Data):
		// A delta (never valid JSON: it ends with ';') goes as a string:
		// the delta of JSON text is mostly that text, which base64 would
		// make a third longer.
		dst = appendJSONString(dst, string(p.Data))
	case json.Valid(p.Data):
		dst = append(dst, p.Data...)
	default:
		dst = appendJSONBase64(dst, p.Data)
		dst = append(dst, `,"b64":true`...)
	}
	if p.Info != nil {
		dst = append(dst, `,"info":`...)
		b, _ := json.Marshal(p.Info) // ClientInfo cannot fail to marshal
		dst = append(dst, b...)
	}
	if len(p.Tags) > 0 {
		dst = append(dst, `,"tags":`...)
		b, _ := json.Marshal(p.Tags)
		dst = append(dst, b...)
	}
	if p.Time != 0 {
		dst = append(dst, `,"time":`...)
		dst = strconv.AppendInt(dst, p.Time, 10)
	}
	if p.Gap {
		dst = append(dst, `,"gap":true`...)
	}
	if p.Delta {
		dst = append(dst, `,"delta":true`...)
	}
	if p.Redelivered {
		dst = append(dst, `,"redelivered":true`...)
	}
	if p.Skipped != 0 {
		dst = append(dst, `,"skipped":`...)
		dst = strconv.AppendUint(dst, uint64(p.Skipped), 10)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 is replaced by
// U+FFFD, as encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	base := len(dst)
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		// Multi-byte: encoding/json's rules apply (rare: channel names are ASCII).
		b, _ := json.Marshal(s)
		return append(dst[:base], b...)
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// MarshalJSON encodes the message push; data that is not valid JSON goes
// out as base64 with "b64": true, as in publications.
func (m *MessagePush) MarshalJSON() ([]byte, error) {
	dst := append(make([]byte, 0, 16+len(m.Data)), `{"data":`...)
	switch {
	case len(m.Data) == 0:
		dst = append(dst, "null"...)
	case json.Valid(m.Data):
		dst = append(dst, m.Data...)
	default:
		dst = appendJSONBase64(dst, m.Data)
		dst = append(dst, `,"b64":true`...)
	}
	return append(dst, '}'), nil
}

// UnmarshalJSON decodes a message push, undoing the base64 form of binary
// data.
func (m *MessagePush) UnmarshalJSON(b []byte) error {
	var aux struct {
		Data Data `json:"data"`
		B64  bool `json:"b64"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	m.Data = aux.Data
	if aux.B64 {
		var s string
		if err := json.Unmarshal(aux.Data, &s); err != nil {
			return fmt.Errorf("b64 data: %w", err)
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("b64 data: %w", err)
		}
		m.Data = raw
	}
	return nil
}
