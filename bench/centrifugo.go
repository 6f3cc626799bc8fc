package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// centrifugoTarget speaks Centrifugo's JSON client protocol (protocol v2,
// the only one of Centrifugo v5 and v6) over WebSocket at
// /connection/websocket, and Centrifugo's HTTP server API. It is how
// Herald is compared with Centrifugo on the same machine with the same
// load tool (bench/peers/).
//
// The frames, as Centrifugo's docs describe them and its encoder
// (github.com/centrifugal/protocol, easyjson) writes them:
//
//	client: {"id":1,"connect":{"name":"herald-bench"}}
//	server: {"id":1,"connect":{"client":"…","version":"6.9.1","ping":25,"pong":true}}
//	client: {"id":2,"subscribe":{"channel":"news"}}
//	server: {"id":2,"subscribe":{}}
//	server: {"push":{"channel":"news","pub":{"data":{…},"offset":3}}}
//	server: {}                    a ping: the client answers {}
//	server: {"id":5,"error":{"code":103,"message":"permission denied"}}
//
// Several messages may share one WebSocket frame, separated by newlines.
// A server-initiated disconnect is a close frame with the code (protocol
// v2), or a {"push":{"disconnect":{"code":…}}} push. The client commands
// are jsonCommands'.
type centrifugoTarget struct{ jsonCommands }

var _ target = centrifugoTarget{}

// centrifugoSubprotocol selects the JSON encoding (it is also the default
// when the client offers none).
const centrifugoSubprotocol = "centrifuge-json"

func (centrifugoTarget) Name() string        { return "centrifugo" }
func (centrifugoTarget) Subprotocol() string { return centrifugoSubprotocol }
func (centrifugoTarget) Binary() bool        { return false }

// AppendPong answers a ping: an empty command.
func (centrifugoTarget) AppendPong(dst []byte) []byte { return append(dst, `{}`...) }

// Next decodes the first of the newline-separated messages of a frame. It
// walks the keys of the message and of its push or publication, skipping
// the values it does not need, so it depends on no field order and does
// not allocate.
func (centrifugoTarget) Next(frame []byte, ev *event) []byte {
	*ev = event{}
	msg, rest := frame, []byte(nil)
	if i := bytes.IndexByte(frame, '\n'); i >= 0 {
		msg, rest = frame[:i], frame[i+1:]
	}
	j := jsonScan{b: msg}
	keys := 0
	ok := j.object(func(key []byte) bool {
		keys++
		switch string(key) { // no allocation: the compiler compares in place
		case "id":
			id, ok := j.uint()
			if !ok {
				return false
			}
			ev.id = id
			if ev.kind == evOther {
				ev.kind = evReply
			}
		case "error":
			ev.failed = true
			start := j.i
			if !j.skip() {
				return false
			}
			ev.data = j.b[start:j.i]
			if ev.kind == evOther {
				ev.kind = evReply
			}
		case "push":
			if !j.push(ev) {
				if ev.kind == evPub {
					// A publication that does not parse: counted as a
					// bad payload.
					ev.data, ev.offset = nil, 0
				} else {
					*ev = event{}
				}
			}
			return false // nothing after the push counts
		default:
			return j.skip()
		}
		return true
	})
	if ok && keys == 0 {
		ev.kind = evPing // {}
	}
	return rest
}

// push decodes a push object: a publication, a disconnect, or something
// the bench ignores.
func (j *jsonScan) push(ev *event) bool {
	return j.object(func(key []byte) bool {
		switch string(key) {
		case "pub":
			return j.publication(ev)
		case "disconnect":
			return j.disconnect(ev)
		}
		return j.skip()
	})
}

// publication decodes a Publication object: data and offset.
func (j *jsonScan) publication(ev *event) bool {
	ev.kind = evPub
	return j.object(func(key []byte) bool {
		switch string(key) {
		case "data":
			start := j.i
			if !j.skip() {
				return false
			}
			ev.data = j.b[start:j.i]
			return true
		case "offset":
			var ok bool
			ev.offset, ok = j.uint()
			return ok
		}
		return j.skip()
	})
}

func (j *jsonScan) disconnect(ev *event) bool {
	ev.kind = evDisconnect
	return j.object(func(key []byte) bool {
		if string(key) != "code" {
			return j.skip()
		}
		code, ok := j.uint()
		if !ok {
			return false
		}
		ev.code = uint32(min(code, 1<<32-1))
		return true
	})
}

// jsonScan walks a JSON text without building values.
type jsonScan struct {
	b []byte
	i int
}

func (j *jsonScan) ws() {
	for j.i < len(j.b) {
		switch j.b[j.i] {
		case ' ', '\t', '\r', '\n':
			j.i++
		default:
			return
		}
	}
}

// open consumes c (after whitespace) if it is next.
func (j *jsonScan) open(c byte) bool {
	j.ws()
	if j.i < len(j.b) && j.b[j.i] == c {
		j.i++
		return true
	}
	return false
}

func (j *jsonScan) close(c byte) bool { return j.open(c) }
func (j *jsonScan) comma() bool       { return j.open(',') }

// object walks an object: for each key it calls value, which must consume
// the key's value and return whether to go on. object returns whether the
// walk reached the closing brace; it stops early, returning false, on a
// syntax error or when value returns false.
func (j *jsonScan) object(value func(key []byte) bool) bool {
	if !j.open('{') {
		return false
	}
	if j.close('}') {
		return true
	}
	for first := true; ; first = false {
		if !first && !j.comma() {
			return false
		}
		key, ok := j.key()
		if !ok || !value(key) {
			return false
		}
		if j.close('}') {
			return true
		}
	}
}

// key reads an object key and its colon. Keys with escapes are returned
// raw (the ones the bench looks for have none).
func (j *jsonScan) key() ([]byte, bool) {
	j.ws()
	start := j.i + 1
	if !j.str() {
		return nil, false
	}
	k := j.b[start : j.i-1]
	if !j.open(':') {
		return nil, false
	}
	return k, true
}

// str skips a string starting at j.i.
func (j *jsonScan) str() bool {
	if j.i >= len(j.b) || j.b[j.i] != '"' {
		return false
	}
	for i := j.i + 1; i < len(j.b); i++ {
		switch j.b[i] {
		case '\\':
			i++
		case '"':
			j.i = i + 1
			return true
		}
	}
	return false
}

// uint reads a non-negative integer.
func (j *jsonScan) uint() (uint64, bool) {
	j.ws()
	v, rest, ok := parseUint(j.b[j.i:])
	if !ok {
		return 0, false
	}
	j.i = len(j.b) - len(rest)
	return v, true
}

// skip skips one value of any kind.
func (j *jsonScan) skip() bool {
	j.ws()
	if j.i >= len(j.b) {
		return false
	}
	switch c := j.b[j.i]; c {
	case '"':
		return j.str()
	case '{', '[':
		depth := 0
		for j.i < len(j.b) {
			switch j.b[j.i] {
			case '"':
				if !j.str() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					j.i++
					return true
				}
			}
			j.i++
		}
		return false
	default: // number, true, false, null
		start := j.i
		for j.i < len(j.b) {
			switch j.b[j.i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return j.i > start
			}
			j.i++
		}
		return j.i > start
	}
}

// Publish calls /api/publish for one channel and /api/broadcast for more.
func (centrifugoTarget) Publish(ctx context.Context, api *apiClient, channels []string, data []byte) error {
	method, body := publishRequest(channels, data)
	resp, err := centrifugoAPI(ctx, api, method, body)
	if err != nil {
		return err
	}
	return centrifugoPublishResult(method, resp, len(channels))
}

// centrifugoError is an error in an API answer.
type centrifugoError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// centrifugoPublishResult checks a publish or broadcast answer: errors
// come in the body of a 200 answer, at the top level or per channel.
func centrifugoPublishResult(method string, resp []byte, n int) error {
	if !bytes.Contains(resp, []byte(`"error"`)) {
		return nil
	}
	var r struct {
		Error  *centrifugoError `json:"error"`
		Result struct {
			Responses []struct {
				Error *centrifugoError `json:"error"`
			} `json:"responses"`
		} `json:"result"`
	}
	if err := json.Unmarshal(resp, &r); err != nil {
		return fmt.Errorf("api %s: %w", method, err)
	}
	if r.Error != nil {
		return fmt.Errorf("api %s: error %d: %s", method, r.Error.Code, r.Error.Message)
	}
	be := &batchError{}
	for i, x := range r.Result.Responses {
		if x.Error != nil && i < n {
			be.failed = append(be.failed, i)
			if be.err == nil {
				be.err = fmt.Errorf("api %s: error %d: %s", method, x.Error.Code, x.Error.Message)
			}
		}
	}
	if be.err != nil {
		return be
	}
	return nil
}

// Info calls /api/info. Centrifugo does not tell its pid: pass
// --server-pid for RSS and CPU figures.
func (centrifugoTarget) Info(ctx context.Context, api *apiClient) (serverInfo, error) {
	resp, err := centrifugoAPI(ctx, api, "info", []byte(`{}`))
	if err != nil {
		return serverInfo{}, err
	}
	var r struct {
		Error  *centrifugoError `json:"error"`
		Result struct {
			Nodes []struct {
				NumClients int `json:"num_clients"`
			} `json:"nodes"`
		} `json:"result"`
	}
	if err := json.Unmarshal(resp, &r); err != nil {
		return serverInfo{}, fmt.Errorf("api info: %w", err)
	}
	if r.Error != nil {
		return serverInfo{}, fmt.Errorf("api info: error %d: %s", r.Error.Code, r.Error.Message)
	}
	var si serverInfo
	for _, n := range r.Result.Nodes {
		si.NumClients += n.NumClients
	}
	return si, nil
}

var errNoAPIKey = errors.New("no API key (--key)")

// centrifugoAPI posts body to /api/METHOD with the key in X-API-Key and
// returns the body of a 200 answer.
func centrifugoAPI(ctx context.Context, api *apiClient, method string, body []byte) ([]byte, error) {
	if api.key == "" {
		return nil, errNoAPIKey
	}
	return api.post(ctx, method, body, "X-API-Key", api.key)
}
