package herald

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
)

// The publish method is the server API's hot path: one request per
// publication, as fast as a backend can send them. Its body and its
// answer skip reflection in the common case; the result is the one
// encoding/json gives, and anything out of the common case goes through
// encoding/json itself.

// maxFastBody bounds the bodies read whole before decoding: larger ones,
// and bodies of unknown length, stream through encoding/json.
const maxFastBody = 64 << 10

// readPublish decodes a publish request body into req. It returns false
// with the bytes it read, for the caller to decode them (followed by the
// rest of the body) with encoding/json, when the body is not of the form
// decodePublish takes.
func readPublish(r *http.Request, req *apiPublish) (read []byte, ok bool) {
	if r.ContentLength <= 0 || r.ContentLength > maxFastBody {
		return nil, false
	}
	// Not pooled: the publication's data is a slice of it.
	buf := make([]byte, r.ContentLength)
	n, err := io.ReadFull(r.Body, buf)
	if err != nil {
		return buf[:n], false
	}
	return buf, decodePublish(buf, req)
}

// decodePublish decodes b into req if b is a JSON object of the form the
// API's clients send: keys channel, data, b64data and idempotency_key,
// each at most once, spelled so, strings of printable ASCII without
// escapes, data any JSON value but null, and nothing but white space after
// the object. It then sets what json.Unmarshal would set, with req.Data a
// slice of b, and returns true. On anything else (tags, other keys,
// escapes, errors) it returns false and req may be partly set.
func decodePublish(b []byte, req *apiPublish) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	var seen uint8
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		var bit uint8
		switch string(key) {
		case "channel", "b64data", "idempotency_key":
			s, j, ok := plainString(b, i)
			if !ok {
				return false
			}
			switch string(key) {
			case "channel":
				bit, req.Channel = 1, string(s)
			case "b64data":
				bit, req.B64Data = 2, string(s)
			default:
				bit, req.IdempotencyKey = 4, string(s)
			}
			i = j
		case "data":
			end, ok := skipValue(b, i)
			if !ok || b[i] == 'n' || !json.Valid(b[i:end]) {
				return false
			}
			bit, req.Data = 8, json.RawMessage(b[i:end:end])
			i = end
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the contents of the JSON string at b[i] and the
// index after it, if it holds printable ASCII only and no escape: the
// contents are then the string's value.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipValue returns the index after the JSON value that starts at b[i]:
// strings are skipped by their quotes and escapes, objects and arrays by
// their brackets, anything else up to the next delimiter. It does not
// validate: json.Valid does, on what it returns.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			k := j + 1
			for ; k < len(b) && b[k] != '"'; k++ {
				if b[k] == '\\' {
					k++
				}
			}
			if k >= len(b) {
				return 0, false
			}
			j = k
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j, j > i
			}
			depth--
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return j, j > i
			}
		}
		if depth == 0 && (b[j] == '"' || b[j] == '}' || b[j] == ']') {
			return j + 1, true
		}
	}
	return len(b), depth == 0
}

// decodeRest decodes, with encoding/json, the bytes already read followed
// by the rest of the body, with the limit of every API body.
func decodeRest(w http.ResponseWriter, r *http.Request, read []byte, req any) error {
	body := io.Reader(http.MaxBytesReader(w, r.Body, maxAPIBody-int64(len(read))))
	if len(read) > 0 {
		body = io.MultiReader(bytes.NewReader(read), body)
	}
	return json.NewDecoder(body).Decode(req)
}

var jsonContentType = []string{"application/json"}

// writeResult writes res as json.NewEncoder(w).Encode does, without
// reflection for a plain epoch.
func writeResult(w http.ResponseWriter, res *apiResult) {
	if res.Error != nil {
		writeJSON(w, http.StatusOK, res)
		return
	}
	var a [96]byte
	b := append(a[:0], '{')
	if res.Epoch != "" {
		b = append(b, `"epoch":`...)
		if plainJSON(res.Epoch) {
			b = append(b, '"')
			b = append(b, res.Epoch...)
			b = append(b, '"')
		} else {
			q, _ := json.Marshal(res.Epoch)
			b = append(b, q...)
		}
	}
	if res.Offset != 0 {
		if res.Epoch != "" {
			b = append(b, ',')
		}
		b = append(b, `"offset":`...)
		b = strconv.AppendUint(b, res.Offset, 10)
	}
	b = append(b, "}\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// plainJSON reports whether s is its own JSON string contents as
// encoding/json writes them (which escapes <, > and &).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
