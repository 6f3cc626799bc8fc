package herald

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// The admin UI's JSON API, under /admin/api/: reads are GETs with query
// parameters, changes POSTs with a JSON body (and the CSRF token, checked
// by authed). Errors are {"error":{"code","message"}} as in the server
// API. Unlike the server API it is authenticated by the admin session,
// not an API key.

type adminHandler = func(http.ResponseWriter, *http.Request, adminSession)

// adminAPI maps each route to its handler.
var adminAPI = map[string]func(a *adminUI) adminHandler{
	"GET /admin/api/session":     func(a *adminUI) adminHandler { return a.apiSession },
	"GET /admin/api/info":        func(a *adminUI) adminHandler { return a.apiInfo },
	"GET /admin/api/stats":       func(a *adminUI) adminHandler { return a.apiStats },
	"GET /admin/api/channels":    func(a *adminUI) adminHandler { return a.apiChannels },
	"GET /admin/api/channel":     func(a *adminUI) adminHandler { return a.apiChannel },
	"GET /admin/api/history":     func(a *adminUI) adminHandler { return a.apiHistory },
	"GET /admin/api/connections": func(a *adminUI) adminHandler { return a.apiConnections },
	"POST /admin/api/publish":    func(a *adminUI) adminHandler { return a.apiPublish },
	"POST /admin/api/disconnect": func(a *adminUI) adminHandler { return a.apiDisconnect },
}

const (
	adminHistoryLimit = 20  // publications per history page by default
	adminHistoryMax   = 200 // at most
	maxAdminBody      = maxAPIBody
)

func (a *adminUI) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), commandTimeout)
}

// apiSession gives the page its CSRF token and the session's expiry.
func (a *adminUI) apiSession(w http.ResponseWriter, _ *http.Request, sess adminSession) {
	writeJSON(w, http.StatusOK, map[string]any{"csrf": a.keys.csrfToken(sess), "expires": sess.expires * 1000, "node": a.s.nodeID})
}

func (a *adminUI) apiInfo(w http.ResponseWriter, r *http.Request, _ adminSession) {
	ctx, cancel := a.ctx(r)
	defer cancel()
	nodes, err := a.s.ClusterInfo(ctx)
	if err != nil {
		a.internalError(w, r, "info", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": nodes, "node": a.s.nodeID})
}

// apiStats answers ?since=MS (unix milliseconds; none: all 15 minutes
// kept) with every node's samples after it.
func (a *adminUI) apiStats(w http.ResponseWriter, r *http.Request, _ adminSession) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "since: unix milliseconds"))
			return
		}
		if ms > 0 {
			since = time.UnixMilli(ms)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": a.s.ClusterStats(since), "now": time.Now().UnixMilli()})
}

// apiChannels answers ?pattern=&cursor=&limit= with a ChannelsPage.
func (a *adminUI) apiChannels(w http.ResponseWriter, r *http.Request, _ adminSession) {
	q := r.URL.Query()
	cq := ChannelsQuery{Pattern: q.Get("pattern"), Cursor: q.Get("cursor")}
	cq.Limit, _ = strconv.Atoi(q.Get("limit"))
	if err := cq.normalize(); err != nil {
		adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "bad pattern: "+err.Error()))
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	page, err := a.s.Channels(ctx, cq)
	if err != nil {
		a.internalError(w, r, "channels", err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// adminNamespace is what the channel page shows of a channel's namespace.
type adminNamespace struct {
	Name           string  `json:"name"`
	History        bool    `json:"history"`
	HistorySize    int     `json:"history_size,omitempty"`
	HistoryTTL     float64 `json:"history_ttl_seconds,omitempty"`
	Presence       bool    `json:"presence"`
	JoinLeave      bool    `json:"join_leave"`
	AllowSubscribe bool    `json:"allow_subscribe"`
	AllowAnonymous bool    `json:"allow_anonymous_subscribe"`
	AllowPublish   bool    `json:"allow_publish"`
	SlowPolicy     string  `json:"slow_policy"`
	Delta          bool    `json:"delta"`
}

// apiChannel answers ?name=CHANNEL: the channel's namespace, subscribers
// (summed over the nodes), stream position, and presence when the
// namespace keeps it.
func (a *adminUI) apiChannel(w http.ResponseWriter, r *http.Request, _ adminSession) {
	s := a.s
	ch := r.URL.Query().Get("name")
	ns, perr := s.resolve(ch)
	if perr != nil {
		adminError(w, apiStatus(perr.Code), perr)
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	out := map[string]any{"channel": ch, "namespace": adminNamespace{
		Name: ns.Name, History: ns.history, HistorySize: ns.HistorySize, HistoryTTL: ns.HistoryTTL.Seconds(),
		Presence: ns.Presence, JoinLeave: ns.JoinLeave, AllowSubscribe: ns.AllowSubscribe,
		AllowAnonymous: ns.AllowAnonymousSubscribe, AllowPublish: ns.AllowPublish, SlowPolicy: cmp.Or(ns.SlowPolicy, "disconnect"),
		Delta: ns.Delta,
	}}
	// Channel names hold no pattern characters: the name matches itself.
	page, err := s.Channels(ctx, ChannelsQuery{Pattern: ch, Limit: 1})
	if err != nil {
		a.internalError(w, r, "channel subscribers", err)
		return
	}
	subscribers := 0
	if len(page.Channels) == 1 {
		subscribers = page.Channels[0].Subscribers
	}
	out["subscribers"], out["unreachable_nodes"] = subscribers, page.Unreachable
	if ns.history {
		_, pos, perr := s.readHistory(ctx, ch, broker.HistoryOptions{})
		if perr != nil {
			adminError(w, apiStatus(perr.Code), perr)
			return
		}
		out["epoch"], out["offset"] = pos.Epoch, pos.Offset
	}
	if ns.Presence {
		p, perr := s.presenceOf(ctx, ns, ch)
		if perr != nil {
			adminError(w, apiStatus(perr.Code), perr)
			return
		}
		st, perr := s.presenceStatsOf(ctx, ns, ch)
		if perr != nil {
			adminError(w, apiStatus(perr.Code), perr)
			return
		}
		out["presence"], out["presence_stats"] = p.Presence, st
	}
	writeJSON(w, http.StatusOK, out)
}

// apiHistory answers ?channel=&since=OFFSET&limit=N with the channel's
// publications after OFFSET in its current epoch, oldest first (without
// since: the last N), and the stream's position.
func (a *adminUI) apiHistory(w http.ResponseWriter, r *http.Request, _ adminSession) {
	s := a.s
	q := r.URL.Query()
	ch := q.Get("channel")
	ns, perr := s.resolve(ch)
	if perr != nil {
		adminError(w, apiStatus(perr.Code), perr)
		return
	}
	if !ns.history {
		adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrNotAvailable, "channel keeps no history"))
		return
	}
	limit := adminHistoryLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "limit: a positive number"))
			return
		}
		limit = min(n, adminHistoryMax)
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	_, pos, perr := s.readHistory(ctx, ch, broker.HistoryOptions{})
	if perr != nil {
		adminError(w, apiStatus(perr.Code), perr)
		return
	}
	since := pos.Offset - min(pos.Offset, uint64(limit))
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "since: an offset"))
			return
		}
		since = n
	}
	pubs, now, perr := s.readHistory(ctx, ch, broker.HistoryOptions{Since: &protocol.StreamPosition{Epoch: pos.Epoch, Offset: since}, Limit: limit})
	if perr != nil {
		adminError(w, apiStatus(perr.Code), perr)
		return
	}
	if pubs == nil {
		pubs = []*protocol.Publication{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"publications": pubs, "epoch": now.Epoch, "offset": now.Offset, "since": since, "limit": limit})
}

// adminPublish is the publish form: data, a JSON value, or text, sent as
// a JSON string.
type adminPublish struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Text    *string         `json:"text"`
}

func (a *adminUI) apiPublish(w http.ResponseWriter, r *http.Request, _ adminSession) {
	var req adminPublish
	if !decodeAdminBody(w, r, &req) {
		return
	}
	data := req.Data
	if req.Text != nil {
		if len(data) > 0 {
			adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "data or text, not both"))
			return
		}
		data, _ = json.Marshal(*req.Text)
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	res, perr := a.s.apiPublishOne(ctx, req.Channel, data, "", "", nil)
	if perr != nil {
		a.audit(r, slog.LevelInfo, "publish", "error: "+perr.Message, "channel", req.Channel)
		adminError(w, apiStatus(perr.Code), perr)
		return
	}
	a.audit(r, slog.LevelInfo, "publish", "ok", "channel", req.Channel, "offset", res.Offset)
	writeJSON(w, http.StatusOK, res)
}

// adminDisconnect closes one connection: with Code, a custom code in
// 4000-4999; otherwise 3007 (reconnect) or 3503 (stay away).
type adminDisconnect struct {
	Client    string `json:"client"`
	Reconnect bool   `json:"reconnect"`
	Code      uint32 `json:"code"`
	Reason    string `json:"reason"`
}

func (a *adminUI) apiDisconnect(w http.ResponseWriter, r *http.Request, _ adminSession) {
	var req adminDisconnect
	if !decodeAdminBody(w, r, &req) {
		return
	}
	if req.Client == "" {
		adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "client required"))
		return
	}
	code := req.Code
	switch {
	case code == 0 && req.Reconnect:
		code = protocol.DisconnectForceReconnect
	case code == 0:
		code = protocol.DisconnectForceNoReconnect
	case code < 4000 || code > 4999:
		adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "a custom code is within 4000-4999"))
		return
	}
	if len(req.Reason) > 120 {
		adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "reason: at most 120 bytes"))
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	page, err := a.s.Connections(ctx, ConnectionsQuery{Client: req.Client, Limit: 1})
	if err != nil {
		a.internalError(w, r, "disconnect", err)
		return
	}
	if len(page.Connections) == 0 {
		a.audit(r, slog.LevelInfo, "disconnect", "no such connection", "client", req.Client)
		adminError(w, http.StatusNotFound, protocol.NewError(protocol.ErrNotFound, "no such connection"))
		return
	}
	if err := a.s.disconnect(ctx, "", req.Client, code, req.Reason); err != nil {
		a.internalError(w, r, "disconnect", err)
		return
	}
	a.audit(r, slog.LevelInfo, "disconnect", "ok", "client", req.Client, "code", code)
	writeJSON(w, http.StatusOK, map[string]any{"code": code})
}

// apiConnections answers ?user=&client=&channel=&remote=&cursor=&limit=
// with a ConnectionsPage.
func (a *adminUI) apiConnections(w http.ResponseWriter, r *http.Request, _ adminSession) {
	q := r.URL.Query()
	cq := ConnectionsQuery{User: q.Get("user"), Client: q.Get("client"), Channel: q.Get("channel"), Remote: q.Get("remote"), Cursor: q.Get("cursor")}
	cq.Limit, _ = strconv.Atoi(q.Get("limit"))
	ctx, cancel := a.ctx(r)
	defer cancel()
	page, err := a.s.Connections(ctx, cq)
	if err != nil {
		a.internalError(w, r, "connections", err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func decodeAdminBody(w http.ResponseWriter, r *http.Request, into any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody)).Decode(into); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			adminError(w, http.StatusRequestEntityTooLarge, protocol.NewError(protocol.ErrLimitExceeded, "request body too large"))
			return false
		}
		adminError(w, http.StatusBadRequest, protocol.NewError(protocol.ErrBadRequest, "invalid JSON body: "+err.Error()))
		return false
	}
	return true
}

func (a *adminUI) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	a.s.log.Error("admin "+what, "remote", remoteIP(r), "err", err)
	adminError(w, http.StatusInternalServerError, protocol.NewError(protocol.ErrInternal, what+" failed"))
}
