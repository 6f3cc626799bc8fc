package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// jsonCommands appends the client commands that Herald's JSON encoding and
// Centrifugo's JSON protocol write alike: {"id":N,"METHOD":{...}}. Both
// targets embed it.
//
// Channel names are restricted to characters that need no JSON escaping
// (checked when the flags are parsed), so they are appended verbatim.
type jsonCommands struct{}

func (jsonCommands) AppendConnect(dst []byte, id uint64) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, `,"connect":{"name":"herald-bench"}}`...)
}

func (jsonCommands) AppendSubscribe(dst []byte, id uint64, channel string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"subscribe":{"channel":"`...)
	dst = append(dst, channel...)
	return append(dst, `"}}`...)
}

func (jsonCommands) AppendPublish(dst []byte, id uint64, channel string, data []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"publish":{"channel":"`...)
	dst = append(dst, channel...)
	dst = append(dst, `","data":`...)
	dst = append(dst, data...)
	return append(dst, `}}`...)
}

// publishRequest is the body of an API publish into one channel, or of a
// broadcast into several, which both servers' APIs take alike, and the
// API method to post it to.
func publishRequest(channels []string, data []byte) (method string, body []byte) {
	body = make([]byte, 0, 64+len(data)+len(channels)*24)
	method = "publish"
	if len(channels) == 1 {
		body = append(body, `{"channel":"`...)
		body = append(body, channels[0]...)
		body = append(body, '"')
	} else {
		method = "broadcast"
		body = append(body, `{"channels":[`...)
		for i, ch := range channels {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, '"')
			body = append(body, ch...)
			body = append(body, '"')
		}
		body = append(body, ']')
	}
	body = append(body, `,"data":`...)
	body = append(body, data...)
	body = append(body, '}')
	return method, body
}

// post posts the JSON body to /api/METHOD with the API key in the header
// the server reads it from (as value) and returns the body of a 200
// answer.
func (a *apiClient) post(ctx context.Context, method string, body []byte, header, value string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/api/"+method, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(header, value)
	req.Header.Set("Content-Type", "application/json")
	res, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("api %s: %s: %s", method, res.Status, bytes.TrimSpace(out))
	}
	return out, nil
}
