package herald

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// maxAPIBody bounds a server API request body.
const maxAPIBody = 4 << 20

type apiPublish struct {
	Channel        string            `json:"channel"`
	Data           json.RawMessage   `json:"data"`
	B64Data        string            `json:"b64data"`
	IdempotencyKey string            `json:"idempotency_key"`
	Tags           map[string]string `json:"tags"`
}

type apiBroadcast struct {
	Channels       []string          `json:"channels"`
	Data           json.RawMessage   `json:"data"`
	B64Data        string            `json:"b64data"`
	IdempotencyKey string            `json:"idempotency_key"`
	Tags           map[string]string `json:"tags"`
}

type apiChannel struct {
	Channel string `json:"channel"`
}

type apiStats struct {
	Since int64 `json:"since"` // unix milliseconds; 0: all kept
}

type apiResult struct {
	Epoch  string          `json:"epoch,omitempty"`
	Offset uint64          `json:"offset,omitempty"`
	Error  *protocol.Error `json:"error,omitempty"`
}

// apiStatus maps an error code to its HTTP status.
func apiStatus(code uint32) int {
	switch code {
	case protocol.ErrBadRequest, protocol.ErrInvalidChannel, protocol.ErrUnknownChannel, protocol.ErrNotAvailable:
		return http.StatusBadRequest
	case protocol.ErrUnauthorized:
		return http.StatusUnauthorized
	case protocol.ErrPermissionDenied:
		return http.StatusForbidden
	case protocol.ErrMethodNotFound, protocol.ErrNotFound:
		return http.StatusNotFound
	case protocol.ErrLimitExceeded, protocol.ErrTooManyRequests:
		return http.StatusTooManyRequests
	case protocol.ErrTimeout:
		return http.StatusGatewayTimeout
	case protocol.ErrUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) apiError(w http.ResponseWriter, method string, status int, e *protocol.Error) {
	s.metrics.apiRequests.WithLabelValues(method, strconv.Itoa(int(e.Code))).Inc()
	writeJSON(w, status, map[string]*protocol.Error{"error": e})
}

func (s *Server) apiKeyOK(r *http.Request) bool {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "apikey ")
	return ok && s.validAPIKey(key)
}

// validAPIKey compares key with every configured API key in constant time.
func (s *Server) validAPIKey(key string) bool {
	if key == "" {
		return false
	}
	for _, k := range s.cfg.APIKeys {
		if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
			return true
		}
	}
	return false
}

// apiMethod is one method of the server API: a fresh request value to
// decode the body into (nil: the body is not read), and its handler. A
// method with channel set names one channel (the request's channel field):
// it is resolved to its namespace before the handler runs, which gets it
// as ns.
type apiMethod struct {
	newRequest func() any
	channel    func(req any) string
	handle     func(s *Server, ctx context.Context, req any, ns *namespace) (any, *protocol.Error)
}

// apiCall makes an apiMethod of a typed handler. channel may be nil.
func apiCall[T any](channel func(*T) string, h func(s *Server, ctx context.Context, req *T, ns *namespace) (any, *protocol.Error)) apiMethod {
	m := apiMethod{
		newRequest: func() any { return new(T) },
		handle: func(s *Server, ctx context.Context, req any, ns *namespace) (any, *protocol.Error) {
			return h(s, ctx, req.(*T), ns)
		},
	}
	if channel != nil {
		m.channel = func(req any) string { return channel(req.(*T)) }
	}
	return m
}

// apiMethods is the server API: POST /api/NAME with a JSON body.
var apiMethods = map[string]apiMethod{
	"publish":        apiCall(nil, (*Server).apiPublish),
	"broadcast":      apiCall(nil, (*Server).apiBroadcast),
	"presence":       apiCall(channelOf, (*Server).apiPresence),
	"presence_stats": apiCall(channelOf, (*Server).apiPresenceStats),
	"history":        apiCall(func(r *protocol.HistoryRequest) string { return r.Channel }, (*Server).apiHistory),
	"disconnect":     apiCall(nil, (*Server).apiDisconnect),
	"subscribe":      apiCall(func(r *apiSubscribe) string { return r.Channel }, (*Server).apiSubscribe),
	"unsubscribe":    apiCall(func(r *apiUnsubscribe) string { return r.Channel }, (*Server).apiUnsubscribe),
	"send":           apiCall(nil, (*Server).apiSend),
	"refresh":        apiCall(nil, (*Server).apiRefresh),
	"history_remove": apiCall(channelOf, (*Server).apiHistoryRemove),
	"channels":       apiCall(nil, (*Server).apiChannels),
	"connections":    apiCall(nil, (*Server).apiConnections),
	"stats":          apiCall(nil, (*Server).apiStats),
	"info":           {handle: (*Server).apiInfo},
}

// batch runs the other methods; it is added here to break the
// initialization cycle of a table whose method reads the table.
func init() { apiMethods["batch"] = apiCall(nil, (*Server).apiBatch) }

func channelOf(r *apiChannel) string { return r.Channel }

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/api/")
	m, known := apiMethods[name]
	label := name
	if !known {
		label = "unknown"
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.apiError(w, label, http.StatusMethodNotAllowed, protocol.NewError(protocol.ErrBadRequest, "use POST"))
		return
	}
	if !s.apiKeyOK(r) {
		s.apiError(w, label, http.StatusUnauthorized, protocol.NewError(protocol.ErrUnauthorized, `missing or wrong "Authorization: apikey KEY" header`))
		return
	}
	if !known {
		s.apiError(w, label, http.StatusNotFound, protocol.NewError(protocol.ErrMethodNotFound, "unknown API method "+strconv.Quote(name)))
		return
	}
	var req any
	if m.newRequest != nil {
		req = m.newRequest()
		if err := decodeAPI(w, r, req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.apiError(w, label, http.StatusRequestEntityTooLarge, protocol.NewError(protocol.ErrLimitExceeded, "request body too large"))
				return
			}
			s.apiError(w, label, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "invalid JSON body: "+err.Error()))
			return
		}
	}
	ctx, cancel := context.WithTimeout(s.traceHTTP(r.Context(), r), commandTimeout)
	defer cancel()
	res, perr := s.runAPI(ctx, m, req)
	if perr != nil {
		s.apiError(w, label, apiStatus(perr.Code), perr)
		return
	}
	if pr, ok := res.(*apiResult); ok && label == "publish" {
		s.metrics.apiPublishOK.get().Inc()
		writeResult(w, pr)
		return
	}
	s.metrics.apiRequests.WithLabelValues(label, "0").Inc()
	writeJSON(w, http.StatusOK, res)
}

// decodeAPI decodes a request body into req: a publish's with
// decodePublish when it can, otherwise with encoding/json (the first JSON
// value of the body, at most maxAPIBody bytes).
func decodeAPI(w http.ResponseWriter, r *http.Request, req any) error {
	var read []byte
	if p, ok := req.(*apiPublish); ok {
		var done bool
		if read, done = readPublish(r, p); done {
			return nil
		}
		*p = apiPublish{}
	}
	return decodeRest(w, r, read, req)
}

// runAPI resolves the method's channel, if it names one, and runs it.
func (s *Server) runAPI(ctx context.Context, m apiMethod, req any) (any, *protocol.Error) {
	var ns *namespace
	if m.channel != nil {
		var perr *protocol.Error
		if ns, perr = s.resolve(m.channel(req)); perr != nil {
			return nil, perr
		}
	}
	return m.handle(s, ctx, req, ns)
}

func (s *Server) apiPublish(ctx context.Context, req *apiPublish, _ *namespace) (any, *protocol.Error) {
	return s.apiPublishOne(ctx, req.Channel, req.Data, req.B64Data, req.IdempotencyKey, req.Tags)
}

// apiBroadcast publishes to each channel in turn; each gets its own result.
// An idempotency key applies per channel.
func (s *Server) apiBroadcast(ctx context.Context, req *apiBroadcast, _ *namespace) (any, *protocol.Error) {
	if len(req.Channels) == 0 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "channels required")
	}
	out := make([]*apiResult, len(req.Channels))
	for i, ch := range req.Channels {
		key := req.IdempotencyKey
		if key != "" {
			key += "/" + ch
		}
		r, e := s.apiPublishOne(ctx, ch, req.Data, req.B64Data, key, req.Tags)
		if e != nil {
			r = &apiResult{Error: e}
		}
		out[i] = r
	}
	return map[string]any{"responses": out}, nil
}

func (s *Server) apiPresence(ctx context.Context, req *apiChannel, ns *namespace) (any, *protocol.Error) {
	return s.presenceOf(ctx, ns, req.Channel)
}

func (s *Server) apiPresenceStats(ctx context.Context, req *apiChannel, ns *namespace) (any, *protocol.Error) {
	return s.presenceStatsOf(ctx, ns, req.Channel)
}

func (s *Server) apiHistory(ctx context.Context, req *protocol.HistoryRequest, ns *namespace) (any, *protocol.Error) {
	return s.history(ctx, ns, req)
}

// apiChannels answers {"channels": {NAME: {"num_clients": N}}, "cursor":
// NEXT}: a page of the cluster's channels in name order.
func (s *Server) apiChannels(ctx context.Context, req *ChannelsQuery, _ *namespace) (any, *protocol.Error) {
	if err := req.normalize(); err != nil {
		return nil, protocol.NewError(protocol.ErrBadRequest, "bad pattern: "+err.Error())
	}
	page, err := s.Channels(ctx, *req)
	if err != nil {
		s.log.Error("channels", "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "channels failed")
	}
	chans := make(map[string]map[string]int, len(page.Channels))
	for _, c := range page.Channels {
		chans[c.Channel] = map[string]int{"num_clients": c.Subscribers}
	}
	return map[string]any{"channels": chans, "cursor": page.Cursor, "unreachable_nodes": page.Unreachable}, nil
}

func (s *Server) apiConnections(ctx context.Context, req *ConnectionsQuery, _ *namespace) (any, *protocol.Error) {
	page, err := s.Connections(ctx, *req)
	if err != nil {
		s.log.Error("connections", "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "connections failed")
	}
	return page, nil
}

func (s *Server) apiInfo(ctx context.Context, _ any, _ *namespace) (any, *protocol.Error) {
	nodes, err := s.ClusterInfo(ctx)
	if err != nil {
		s.log.Error("info", "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "info failed")
	}
	// "node" names the node that answered, among "nodes".
	return map[string]any{"nodes": nodes, "node": s.nodeID}, nil
}

func (s *Server) apiStats(_ context.Context, req *apiStats, _ *namespace) (any, *protocol.Error) {
	var since time.Time
	if req.Since > 0 {
		since = time.UnixMilli(req.Since)
	}
	return map[string]any{"nodes": s.ClusterStats(since)}, nil
}

func (s *Server) apiPublishOne(ctx context.Context, ch string, data json.RawMessage, b64 string, key string, tags map[string]string) (*apiResult, *protocol.Error) {
	if ch == EventsChannel {
		return nil, protocol.NewError(protocol.ErrPermissionDenied, "the events channel is written by Herald only")
	}
	ns, perr := s.resolve(ch)
	if perr != nil {
		return nil, perr
	}
	payload := []byte(data)
	if b64 != "" {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, protocol.NewError(protocol.ErrBadRequest, "b64data is not base64")
		}
		payload = raw
	}
	if len(payload) == 0 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "data or b64data required")
	}
	if len(payload) > s.cfg.MaxMessageSize {
		return nil, protocol.NewError(protocol.ErrLimitExceeded, "data larger than max_message_size")
	}
	pos, perr := s.publish(ctx, ns, ch, "api", &protocol.Publication{Data: payload, Tags: tags}, key)
	if perr != nil {
		return nil, perr
	}
	s.metrics.apiPublications.get().Inc()
	return &apiResult{Epoch: pos.Epoch, Offset: pos.Offset}, nil
}

// apiHistoryRemove drops a channel's history. Its stream starts again with
// a new epoch: subscribers see the epoch change and recover, and a client
// recovering from a position in the old epoch is told it was not
// recovered.
func (s *Server) apiHistoryRemove(ctx context.Context, req *apiChannel, ns *namespace) (any, *protocol.Error) {
	if !ns.history {
		return nil, protocol.NewError(protocol.ErrNotAvailable, "channel keeps no history")
	}
	if err := s.broker.RemoveHistory(ctx, req.Channel); err != nil {
		s.log.Error("history_remove", "channel", req.Channel, "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "history_remove failed")
	}
	s.log.Info("history removed", "channel", req.Channel)
	return struct{}{}, nil
}

// maxBatch bounds the commands of one batch request.
const maxBatch = 1000

type apiBatch struct {
	Commands []struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	} `json:"commands"`
}

// apiBatchReply is one command's answer in a batch.
type apiBatchReply struct {
	Result any             `json:"result,omitempty"`
	Error  *protocol.Error `json:"error,omitempty"`
}

// apiBatch runs several API commands in order and answers each in order:
// {"replies": [{"result": ...} or {"error": ...}, ...]}. A failing command
// does not stop the ones after it.
func (s *Server) apiBatch(ctx context.Context, req *apiBatch, _ *namespace) (any, *protocol.Error) {
	if len(req.Commands) == 0 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "commands required")
	}
	if len(req.Commands) > maxBatch {
		return nil, protocol.NewError(protocol.ErrLimitExceeded, "at most "+strconv.Itoa(maxBatch)+" commands in a batch")
	}
	replies := make([]apiBatchReply, len(req.Commands))
	for i, c := range req.Commands {
		m, ok := apiMethods[c.Method]
		if !ok || c.Method == "batch" {
			replies[i].Error = protocol.NewError(protocol.ErrMethodNotFound, "unknown API method "+strconv.Quote(c.Method))
			continue
		}
		var params any
		if m.newRequest != nil {
			params = m.newRequest()
			body := c.Params
			if len(body) == 0 {
				body = json.RawMessage("{}")
			}
			if err := json.Unmarshal(body, params); err != nil {
				replies[i].Error = protocol.NewError(protocol.ErrBadRequest, "invalid params: "+err.Error())
				continue
			}
		}
		res, perr := s.runAPI(ctx, m, params)
		replies[i] = apiBatchReply{Result: res, Error: perr}
	}
	return map[string]any{"replies": replies}, nil
}
