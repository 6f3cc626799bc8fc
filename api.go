package herald

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"strconv"
	"strings"

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

type apiDisconnect struct {
	User   string `json:"user"`
	Code   uint32 `json:"code"`
	Reason string `json:"reason"`
}

type apiChannels struct {
	Pattern string `json:"pattern"`
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
	h := r.Header.Get("Authorization")
	key, ok := strings.CutPrefix(h, "apikey ")
	if !ok || key == "" {
		return false
	}
	for _, k := range s.cfg.APIKeys {
		if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
			return true
		}
	}
	return false
}

var apiMethods = map[string]bool{
	"publish": true, "broadcast": true, "presence": true, "presence_stats": true,
	"history": true, "disconnect": true, "channels": true, "info": true,
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	label := method
	if !apiMethods[method] {
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
	if !apiMethods[method] {
		s.apiError(w, label, http.StatusNotFound, protocol.NewError(protocol.ErrMethodNotFound, "unknown API method "+strconv.Quote(method)))
		return
	}
	body := http.MaxBytesReader(w, r.Body, maxAPIBody)
	dec := json.NewDecoder(body)
	decode := func(v any) bool {
		if err := dec.Decode(v); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.apiError(w, label, http.StatusRequestEntityTooLarge, protocol.NewError(protocol.ErrLimitExceeded, "request body too large"))
				return false
			}
			s.apiError(w, label, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "invalid JSON body: "+err.Error()))
			return false
		}
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), commandTimeout)
	defer cancel()
	var (
		res  any
		perr *protocol.Error
	)
	switch method {
	case "publish":
		var req apiPublish
		if !decode(&req) {
			return
		}
		res, perr = s.apiPublishOne(ctx, req.Channel, req.Data, req.B64Data, req.IdempotencyKey, req.Tags)
	case "broadcast":
		var req apiBroadcast
		if !decode(&req) {
			return
		}
		if len(req.Channels) == 0 {
			perr = protocol.NewError(protocol.ErrBadRequest, "channels required")
			break
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
		res = map[string]any{"responses": out}
	case "presence", "presence_stats":
		var req apiChannel
		if !decode(&req) {
			return
		}
		ns, e := s.resolve(req.Channel)
		if e != nil {
			perr = e
			break
		}
		if method == "presence" {
			res, perr = s.presenceOf(ctx, ns, req.Channel)
		} else {
			res, perr = s.presenceStatsOf(ctx, ns, req.Channel)
		}
	case "history":
		var req protocol.HistoryRequest
		if !decode(&req) {
			return
		}
		ns, e := s.resolve(req.Channel)
		if e != nil {
			perr = e
			break
		}
		res, perr = s.history(ctx, ns, &req)
	case "disconnect":
		var req apiDisconnect
		if !decode(&req) {
			return
		}
		if req.User == "" {
			perr = protocol.NewError(protocol.ErrBadRequest, "user required")
			break
		}
		code := req.Code
		if code == 0 {
			code = protocol.DisconnectForceNoReconnect
		}
		if code < 3000 || code > 4999 {
			perr = protocol.NewError(protocol.ErrBadRequest, "code must be within 3000-4999")
			break
		}
		if err := s.disconnectUser(ctx, req.User, code, req.Reason); err != nil {
			perr = protocol.NewError(protocol.ErrInternal, "disconnect failed")
			break
		}
		res = struct{}{}
	case "channels":
		var req apiChannels
		if !decode(&req) {
			return
		}
		if _, err := path.Match(req.Pattern, ""); err != nil {
			perr = protocol.NewError(protocol.ErrBadRequest, "bad pattern: "+err.Error())
			break
		}
		var match func(string) bool
		if req.Pattern != "" {
			match = func(ch string) bool { ok, _ := path.Match(req.Pattern, ch); return ok }
		}
		chans := map[string]map[string]int{}
		for _, c := range s.hub.Channels(match) {
			chans[c.Name] = map[string]int{"num_clients": c.Subscribers}
		}
		res = map[string]any{"channels": chans}
	case "info":
		res = map[string]any{"nodes": []Info{s.Info()}}
	}
	if perr != nil {
		s.apiError(w, label, apiStatus(perr.Code), perr)
		return
	}
	s.metrics.apiRequests.WithLabelValues(label, "0").Inc()
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) apiPublishOne(ctx context.Context, ch string, data json.RawMessage, b64 string, key string, tags map[string]string) (*apiResult, *protocol.Error) {
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
	pos, perr := s.publish(ctx, ns, ch, &protocol.Publication{Data: payload, Tags: tags}, key)
	if perr != nil {
		return nil, perr
	}
	s.metrics.publications.WithLabelValues("api").Inc()
	return &apiResult{Epoch: pos.Epoch, Offset: pos.Offset}, nil
}
