package herald

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// ProxyConfig points Herald at the application's HTTP endpoints. Each is
// called with a JSON POST and answers {"result": {...}}, {"error": {"code",
// "message"}} (passed to the client) or {"disconnect": {"code", "reason"}}.
// See docs/security.md for the bodies.
type ProxyConfig struct {
	// ConnectURL decides connections that come without a token.
	ConnectURL string `yaml:"connect_url" json:"connect_url"`
	// SubscribeURL and PublishURL decide subscribes and client publishes
	// in namespaces with proxy_subscribe / proxy_publish.
	SubscribeURL string `yaml:"subscribe_url" json:"subscribe_url"`
	PublishURL   string `yaml:"publish_url" json:"publish_url"`
	// RPCURL answers client rpc commands (when Config.OnRPC is nil).
	RPCURL string `yaml:"rpc_url" json:"rpc_url"`
	// RefreshURL extends connections that the connect proxy gave an
	// expiry; without it they are closed with 3502 at expiry.
	RefreshURL string `yaml:"refresh_url" json:"refresh_url"`
	// DisconnectURL and UnsubscribeURL are told when an established
	// connection, or a subscription, ends, with the close or unsubscribe
	// code and reason. These calls inform: their answer is not used, and
	// a failed call is logged, not retried (lifecycle events with
	// webhooks are the reliable way to learn of these).
	DisconnectURL  string `yaml:"disconnect_url" json:"disconnect_url"`
	UnsubscribeURL string `yaml:"unsubscribe_url" json:"unsubscribe_url"`
	// Timeout bounds each call. Default 5s. A call that fails or times out
	// gets the client error 100 or 115 (both temporary).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Headers are added to every call (for example an Authorization header
	// the application checks).
	Headers map[string]string `yaml:"headers" json:"headers"`
	// ForwardHeaders are copied from the client's WebSocket handshake to the
	// connect call. Default Cookie and Authorization.
	ForwardHeaders []string `yaml:"forward_headers" json:"forward_headers"`
}

// proxyRequest is the body of every proxy call; fields are filled as they
// apply.
type proxyRequest struct {
	Client   string            `json:"client"`
	User     string            `json:"user,omitempty"`
	Encoding string            `json:"encoding,omitempty"`
	Name     string            `json:"name,omitempty"`
	Remote   string            `json:"remote_addr,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
	Channel  string            `json:"channel,omitempty"`
	Method   string            `json:"method,omitempty"`
	Data     json.RawMessage   `json:"data,omitempty"`
	B64Data  string            `json:"b64data,omitempty"`
	Code     uint32            `json:"code,omitempty"`   // disconnect, unsubscribe
	Reason   string            `json:"reason,omitempty"` // disconnect, unsubscribe
}

type proxyResult struct {
	User     string          `json:"user"`
	Info     json.RawMessage `json:"info"`
	ExpireAt int64           `json:"expire_at"`
	Expired  bool            `json:"expired"`
	Channels []string        `json:"channels"`
	Data     json.RawMessage `json:"data"`
	B64Data  string          `json:"b64data"`
}

type proxyResponse struct {
	Result     *proxyResult    `json:"result"`
	Error      *protocol.Error `json:"error"`
	Disconnect *struct {
		Code   uint32 `json:"code"`
		Reason string `json:"reason"`
	} `json:"disconnect"`
}

// proxyDisconnect is a proxy's order to close the connection.
type proxyDisconnect struct {
	code   uint32
	reason string
}

func (d *proxyDisconnect) Error() string { return fmt.Sprintf("disconnect %d %s", d.code, d.reason) }

var proxyHTTP = &http.Client{}

func setData(r *proxyRequest, data []byte) {
	if json.Valid(data) {
		r.Data = data
	} else if len(data) > 0 {
		r.B64Data = base64.StdEncoding.EncodeToString(data)
	}
}

func (p *proxyResult) payload() ([]byte, error) {
	if p.B64Data != "" {
		return base64.StdEncoding.DecodeString(p.B64Data)
	}
	return p.Data, nil
}

// callProxy posts req to url. A *protocol.Error is the application's
// refusal, a *proxyDisconnect its order to disconnect; other errors mean
// the call failed.
func (s *Server) callProxy(ctx context.Context, url string, req *proxyRequest) (*proxyResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Proxy.Timeout)
	defer cancel()
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	for k, v := range s.cfg.Proxy.Headers {
		hr.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := proxyHTTP.Do(hr)
	s.observe("proxy", start)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, protocol.NewError(protocol.ErrTimeout, "application timed out")
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("proxy %s: HTTP %d", url, resp.StatusCode)
	}
	var out proxyResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("proxy %s: %w", url, err)
	}
	switch {
	case out.Disconnect != nil:
		return nil, &proxyDisconnect{code: out.Disconnect.Code, reason: out.Disconnect.Reason}
	case out.Error != nil:
		if out.Error.Code == 0 {
			out.Error.Code = protocol.ErrPermissionDenied
		}
		return nil, out.Error
	case out.Result == nil:
		return nil, fmt.Errorf("proxy %s: answer without result, error or disconnect", url)
	}
	return out.Result, nil
}

// proxyError turns a failed proxy call into what the client gets: the
// application's error as is, a timeout as 115, anything else as 100. A
// disconnect order closes the connection and returns nil.
func (ss *session) proxyError(err error) *protocol.Error {
	var pe *protocol.Error
	var pd *proxyDisconnect
	switch {
	case errors.As(err, &pd):
		code := pd.code
		if code < 3000 || code > 4999 {
			code = protocol.DisconnectForceNoReconnect
		}
		ss.disconnectWith(code, pd.reason, 0, true)
		return nil
	case errors.As(err, &pe):
		return pe
	}
	ss.s.log.Warn("proxy call failed", "err", err)
	return protocol.NewError(protocol.ErrInternal, "application unavailable")
}

// maxNotifying bounds the disconnect and unsubscribe calls in flight; past
// it, calls are dropped (and logged): a slow application must not hold a
// goroutine per ended connection.
const maxNotifying = 256

// notifyProxy posts req to url in the background, answer unused.
func (s *Server) notifyProxy(url string, req *proxyRequest) {
	select {
	case s.notifying <- struct{}{}:
	default:
		s.log.Warn("proxy notification dropped: too many in flight", "url", url, "client", req.Client)
		return
	}
	if !s.goTracked(func() {
		defer func() { <-s.notifying }()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Proxy.Timeout)
		defer cancel()
		if _, err := s.callProxy(ctx, url, req); err != nil {
			var pd *proxyDisconnect
			if !errors.As(err, &pd) {
				s.log.Warn("proxy notification failed", "url", url, "client", req.Client, "err", err)
			}
		}
	}) {
		<-s.notifying
	}
}
