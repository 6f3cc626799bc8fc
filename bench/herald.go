package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/heraldhq/herald/protocol"
)

// heraldTarget speaks Herald protocol v1 in its JSON encoding
// (docs/protocol.md) and Herald's server API. Its client commands are
// jsonCommands'.
type heraldTarget struct{ jsonCommands }

var _ target = heraldTarget{}

func (heraldTarget) Name() string        { return "herald" }
func (heraldTarget) Subprotocol() string { return protocol.SubprotocolJSON }
func (heraldTarget) Binary() bool        { return false }

func (heraldTarget) AppendPong(dst []byte) []byte { return append(dst, `{"pong":{}}`...) }

var (
	hPub        = []byte(`{"pub":`)
	hData       = []byte(`"data":`)
	hOffset     = []byte(`"offset":`)
	hPing       = []byte(`{"ping":`)
	hID         = []byte(`{"id":`)
	hError      = []byte(`,"error":`)
	hDisconnect = []byte(`{"disconnect":{"code":`)
	hDeltaEnd   = []byte(`,"delta":true}}`)
	hB64        = []byte(`,"b64":true`)
)

// deltaSubscribe is a Herald target whose subscribe asks for Fossil deltas
// (--delta).
type deltaSubscribe struct{ target }

func (deltaSubscribe) AppendSubscribe(dst []byte, id uint64, channel string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"subscribe":{"channel":"`...)
	dst = append(dst, channel...)
	return append(dst, `","delta":"fossil"}}`...)
}

// Next decodes a server message by its leading bytes. The server's JSON
// encoder writes fields in a fixed order (protocol/json.go), which is what
// lets this run without a JSON decoder: "pub" pushes start with {"pub":,
// replies with {"id":N and carry ,"error": right after the id.
func (heraldTarget) Next(frame []byte, ev *event) []byte {
	*ev = event{}
	switch {
	case bytes.HasPrefix(frame, hPub):
		i := bytes.Index(frame, hData)
		if i < 0 {
			ev.kind = evPub // no data: a bad payload
			return nil
		}
		ev.kind = evPub
		ev.data = frame[i+len(hData):]
		// "delta" is the last field the server writes.
		ev.delta = bytes.HasSuffix(frame, hDeltaEnd)
		if j := bytes.Index(frame[:i], hOffset); j >= 0 {
			ev.offset, _, _ = parseUint(frame[j+len(hOffset):])
		}
	case bytes.HasPrefix(frame, hID):
		id, rest, ok := parseUint(frame[len(hID):])
		if !ok {
			return nil
		}
		ev.kind = evReply
		ev.id = id
		if bytes.HasPrefix(rest, hError) {
			ev.failed = true
			ev.data = rest[len(hError):]
		}
	case bytes.HasPrefix(frame, hPing):
		ev.kind = evPing
	case bytes.HasPrefix(frame, hDisconnect):
		code, _, _ := parseUint(frame[len(hDisconnect):])
		ev.kind = evDisconnect
		ev.code = uint32(code)
	}
	return nil
}

// Publish calls /api/publish for one channel and /api/broadcast for more.
func (heraldTarget) Publish(ctx context.Context, api *apiClient, channels []string, data []byte) error {
	method, body := publishRequest(channels, data)
	resp, err := heraldAPI(ctx, api, method, body)
	if err != nil {
		return err
	}
	if method == "broadcast" && bytes.Contains(resp, []byte(`"error"`)) {
		var r struct {
			Responses []struct {
				Error *protocol.Error `json:"error"`
			} `json:"responses"`
		}
		if err := json.Unmarshal(resp, &r); err != nil {
			return fmt.Errorf("api broadcast: %w", err)
		}
		be := &batchError{}
		for i, x := range r.Responses {
			if x.Error != nil {
				be.failed = append(be.failed, i)
				if be.err == nil {
					be.err = fmt.Errorf("api broadcast: error %d: %s", x.Error.Code, x.Error.Message)
				}
			}
		}
		if be.err != nil {
			return be
		}
	}
	return nil
}

func (heraldTarget) Info(ctx context.Context, api *apiClient) (serverInfo, error) {
	resp, err := heraldAPI(ctx, api, "info", []byte(`{}`))
	if err != nil {
		return serverInfo{}, err
	}
	var r struct {
		Node  string `json:"node"` // the node asked
		Nodes []struct {
			Node       string `json:"node"`
			PID        int    `json:"pid"`
			NumClients int    `json:"num_clients"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(resp, &r); err != nil {
		return serverInfo{}, fmt.Errorf("api info: %w", err)
	}
	// info lists every node of the cluster; the figures wanted are those
	// of the node asked. (Servers before cluster-wide info listed only
	// that node, without "node".)
	var si serverInfo
	for i, n := range r.Nodes {
		if r.Node != "" && n.Node != r.Node {
			continue
		}
		if i == 0 || r.Node != "" {
			si.PID = n.PID
		}
		si.NumClients += n.NumClients
	}
	return si, nil
}

// heraldAPI posts body to /api/METHOD and returns the response body of a
// 200 answer.
func heraldAPI(ctx context.Context, api *apiClient, method string, body []byte) ([]byte, error) {
	return api.post(ctx, method, body, "Authorization", "apikey "+api.key)
}
