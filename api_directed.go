package herald

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/heraldhq/herald/protocol"
)

// Server API methods that act on users' and clients' connections on any
// node (directed.go): subscribe, unsubscribe, send, refresh, disconnect.
// Each answers {"connections": N, ...} (ActResult), or error 114 (HTTP 404)
// when no node has a connection of the user or client.

type apiSubscribe struct {
	Target
	Channel string `json:"channel"`
}

type apiUnsubscribe struct {
	Target
	Channel string `json:"channel"`
	Code    uint32 `json:"code"`
	Reason  string `json:"reason"`
}

type apiSend struct {
	Target
	Data    json.RawMessage `json:"data"`
	B64Data string          `json:"b64data"`
}

type apiRefresh struct {
	Target
	ExpireAt int64 `json:"expire_at"` // unix seconds; 0: no expiry
	Expired  bool  `json:"expired"`
}

type apiDisconnect struct {
	Target
	Code   uint32 `json:"code"`
	Reason string `json:"reason"`
}

// actResult turns runAct's outcome into an API answer.
func (s *Server) actResult(ctx context.Context, a *act) (any, *protocol.Error) {
	if perr := a.Target.validate(); perr != nil {
		return nil, perr
	}
	res, err := s.runAct(ctx, a)
	switch {
	case errors.Is(err, ErrNoConnection):
		what := "user " + a.User
		if a.Client != "" {
			what = "client " + a.Client
		}
		return nil, protocol.NewError(protocol.ErrNotFound, "no connection of "+what)
	case err != nil:
		s.log.Error("api "+a.Op, "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, a.Op+" failed")
	}
	return res, nil
}

func (s *Server) apiSubscribe(ctx context.Context, req *apiSubscribe, _ *namespace) (any, *protocol.Error) {
	a := &act{Target: req.Target, Op: "subscribe", Channel: req.Channel}
	if perr := a.Target.validate(); perr != nil {
		return nil, perr
	}
	s.addGrant(ctx, req.User, req.Channel)
	return s.actResult(ctx, a)
}

func (s *Server) apiUnsubscribe(ctx context.Context, req *apiUnsubscribe, _ *namespace) (any, *protocol.Error) {
	code := req.Code
	if code == 0 {
		code = protocol.UnsubscribeServer
	}
	if code < 2000 || code > 2999 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "code must be within 2000-2999")
	}
	a := &act{Target: req.Target, Op: "unsubscribe", Channel: req.Channel, Code: code, Reason: req.Reason}
	if perr := a.Target.validate(); perr != nil {
		return nil, perr
	}
	s.removeGrant(ctx, req.User, req.Channel)
	return s.actResult(ctx, a)
}

func (s *Server) apiSend(ctx context.Context, req *apiSend, _ *namespace) (any, *protocol.Error) {
	payload := []byte(req.Data)
	if req.B64Data != "" {
		raw, err := base64.StdEncoding.DecodeString(req.B64Data)
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
	return s.actResult(ctx, &act{Target: req.Target, Op: "send", Data: payload})
}

func (s *Server) apiRefresh(ctx context.Context, req *apiRefresh, _ *namespace) (any, *protocol.Error) {
	if req.ExpireAt < 0 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "expire_at must be a unix time in seconds, or 0")
	}
	return s.actResult(ctx, &act{Target: req.Target, Op: "refresh", ExpireAt: req.ExpireAt, Expired: req.Expired})
}

func (s *Server) apiDisconnect(ctx context.Context, req *apiDisconnect, _ *namespace) (any, *protocol.Error) {
	code := req.Code
	if code == 0 {
		code = protocol.DisconnectForceNoReconnect
	}
	if code < 3000 || code > 4999 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "code must be within 3000-4999")
	}
	return s.actResult(ctx, &act{Target: req.Target, Op: "disconnect", Code: code, Reason: req.Reason})
}
