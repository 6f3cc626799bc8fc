package herald

import (
	"context"
	"encoding/json"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Cluster-wide introspection: info, channels and connections, answered by
// every node of the cluster (nodes.go carries the queries) and merged here.

// Info describes a node.
type Info struct {
	Node          string  `json:"node"`
	Version       string  `json:"version"`
	Engine        string  `json:"engine"`
	Broker        string  `json:"broker"`
	Address       string  `json:"address,omitempty"`
	Uptime        float64 `json:"uptime_seconds"`
	PID           int     `json:"pid"`
	Connections   int     `json:"num_clients"`
	Users         int     `json:"num_users"`
	Channels      int     `json:"num_channels"`
	Subscriptions int     `json:"num_subscriptions"`
	Goroutines    int     `json:"goroutines"`
	RSS           uint64  `json:"rss_bytes"`
	// CPU is the cores the node used, and PublicationsPerSecond and
	// DeliveriesPerSecond its rates, averaged over the last minute.
	CPU                   float64 `json:"cpu_cores"`
	PublicationsPerSecond float64 `json:"publications_per_second"`
	DeliveriesPerSecond   float64 `json:"deliveries_per_second"`
	// Unreachable marks a node that did not answer within the query
	// timeout; its other fields are from its last sample, and LastSeen
	// says when that was.
	Unreachable bool       `json:"unreachable,omitempty"`
	LastSeen    *time.Time `json:"last_seen,omitempty"`
}

// Info returns a snapshot of this node's counters.
func (s *Server) Info() Info {
	in := Info{
		Node: s.nodeID, Version: Version, Engine: s.engine.Name(), Broker: brokerName(s.broker),
		Address: s.address(), Uptime: time.Since(s.started).Seconds(), PID: pid,
		Connections: s.sessions.count(), Users: s.sessions.numUsers(),
		Channels: s.hub.NumChannels(), Subscriptions: s.hub.NumSubscriptions(),
		Goroutines: goroutines(), RSS: processRSS(),
	}
	if last := s.nodes.ownSeries(s.nodeID, 60); len(last) > 0 {
		for _, x := range last {
			in.CPU += x.CPU
			in.PublicationsPerSecond += x.Publications
			in.DeliveriesPerSecond += x.Deliveries
		}
		n := float64(len(last))
		in.CPU /= n
		in.PublicationsPerSecond /= n
		in.DeliveriesPerSecond /= n
	}
	return in
}

// ClusterInfo returns the Info of every node of the cluster, sorted by
// node id; nodes that did not answer within Config.QueryTimeout are
// listed with Unreachable set.
func (s *Server) ClusterInfo(ctx context.Context) ([]Info, error) {
	answers, silent, err := s.queryNodes(ctx, "info", struct{}{})
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(answers)+len(silent))
	for node, body := range answers {
		var in Info
		if err := json.Unmarshal(body, &in); err != nil {
			s.log.Warn("node info answer", "node", node, "err", err)
			continue
		}
		out = append(out, in)
	}
	known := s.nodes.known(time.Now())
	for _, node := range silent {
		k := known[node]
		h, last := k.hello, k.hello.Sample
		in := Info{Node: node, Version: h.Version, Engine: h.Engine, Broker: h.Broker, Address: h.Address, PID: h.PID, Unreachable: true,
			Connections: last.Connections, Channels: last.Channels, Subscriptions: last.Subscriptions, Goroutines: last.Goroutines, RSS: last.RSS}
		if !k.lastSeen.IsZero() {
			t := k.lastSeen.UTC()
			in.LastSeen = &t
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Info) int { return compareStrings(a.Node, b.Node) })
	return out, nil
}

// ClusterStats returns every known node's per-second samples newer than
// since (all 15 minutes kept when since is zero).
func (s *Server) ClusterStats(since time.Time) []NodeSeries {
	var ms int64
	if !since.IsZero() {
		ms = since.UnixMilli()
	}
	return s.nodes.series(ms)
}

// ChannelsQuery selects channels: those matching Pattern (path.Match
// syntax; "" matches all), after Cursor (a name), at most Limit (default
// 100, at most 1000).
type ChannelsQuery struct {
	Pattern string `json:"pattern"`
	Cursor  string `json:"cursor"`
	Limit   int    `json:"limit"`
}

// ChannelsPage is a page of channels in name order, with subscribers
// summed over the nodes that answered. Cursor, when not empty, fetches the
// next page. Unreachable lists nodes whose subscribers are not counted.
type ChannelsPage struct {
	Channels    []ChannelCount `json:"channels"`
	Cursor      string         `json:"cursor,omitempty"`
	Unreachable []string       `json:"unreachable_nodes,omitempty"`
}

// ChannelCount is a channel and its subscribers.
type ChannelCount struct {
	Channel     string `json:"channel"`
	Subscribers int    `json:"num_clients"`
}

// channelsQuery is what each node is asked: the first Limit matching names
// after Cursor.
type channelsQuery = ChannelsQuery

type channelsAnswer struct {
	Channels []ChannelCount `json:"channels"`
	More     bool           `json:"more,omitempty"`
}

func (q *ChannelsQuery) normalize() error {
	if _, err := path.Match(q.Pattern, ""); err != nil {
		return err
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, maxQueryLimit)
	return nil
}

func (s *Server) localChannels(q *channelsQuery) channelsAnswer {
	match := func(ch string) bool { return ch > q.Cursor }
	if q.Pattern != "" {
		match = func(ch string) bool {
			ok, _ := path.Match(q.Pattern, ch)
			return ok && ch > q.Cursor
		}
	}
	var a channelsAnswer
	for _, c := range s.hub.Channels(match) {
		if len(a.Channels) == q.Limit {
			a.More = true
			break
		}
		a.Channels = append(a.Channels, ChannelCount{Channel: c.Name, Subscribers: c.Subscribers})
	}
	return a
}

// Channels lists the cluster's channels with subscribers, page by page.
// Each node returns its first Limit names after the cursor; the first
// Limit names of their union are the cluster's, and each of them is within
// the page of every node that has it, so its counts sum completely.
func (s *Server) Channels(ctx context.Context, q ChannelsQuery) (*ChannelsPage, error) {
	if err := q.normalize(); err != nil {
		return nil, err
	}
	answers, silent, err := s.queryNodes(ctx, "channels", &q)
	if err != nil {
		return nil, err
	}
	sums := map[string]int{}
	more := false
	for node, body := range answers {
		var a channelsAnswer
		if err := json.Unmarshal(body, &a); err != nil {
			s.log.Warn("node channels answer", "node", node, "err", err)
			continue
		}
		more = more || a.More
		for _, c := range a.Channels {
			sums[c.Channel] += c.Subscribers
		}
	}
	page := &ChannelsPage{Channels: make([]ChannelCount, 0, min(len(sums), q.Limit)), Unreachable: silent}
	names := make([]string, 0, len(sums))
	for name := range sums {
		names = append(names, name)
	}
	slices.Sort(names)
	if len(names) > q.Limit {
		names, more = names[:q.Limit], true
	}
	for _, name := range names {
		page.Channels = append(page.Channels, ChannelCount{Channel: name, Subscribers: sums[name]})
	}
	if more && len(names) > 0 {
		page.Cursor = names[len(names)-1]
	}
	return page, nil
}

// ConnectionsQuery selects connections: all of its non-empty filters must
// match (User and Client exactly, Channel among the subscriptions, Remote
// as a prefix of the address). Cursor continues a previous page; Limit
// defaults to 100, at most 1000.
type ConnectionsQuery struct {
	User    string `json:"user,omitempty"`
	Client  string `json:"client,omitempty"`
	Channel string `json:"channel,omitempty"`
	Remote  string `json:"remote,omitempty"`
	Cursor  string `json:"cursor,omitempty"`
	Limit   int    `json:"limit,omitempty"`
}

// ConnectionInfo describes one client connection.
type ConnectionInfo struct {
	Node          string    `json:"node"`
	Client        string    `json:"client"`
	User          string    `json:"user"`
	Remote        string    `json:"remote_addr"`
	Transport     string    `json:"transport"`
	Codec         string    `json:"codec"`
	ConnectedAt   time.Time `json:"connected_at"`
	Subscriptions []string  `json:"subscriptions"`
	QueueFrames   int       `json:"queue_frames"`
	QueueBytes    int       `json:"queue_bytes"`
	// Admin marks a connection of the admin UI's live tail.
	Admin bool `json:"admin,omitempty"`
}

// ConnectionsPage is a page of connections ordered by node, then client id.
type ConnectionsPage struct {
	Connections []ConnectionInfo `json:"connections"`
	Cursor      string           `json:"cursor,omitempty"`
	Unreachable []string         `json:"unreachable_nodes,omitempty"`
}

type connectionsAnswer struct {
	Connections []ConnectionInfo `json:"connections"`
	More        bool             `json:"more,omitempty"`
}

// connCursor splits a connections cursor, "node/client".
func connCursor(c string) (node, client string) {
	node, client, _ = strings.Cut(c, "/")
	return node, client
}

func (s *Server) localConnections(q *ConnectionsQuery) connectionsAnswer {
	curNode, curClient := connCursor(q.Cursor)
	if q.Cursor != "" && s.nodeID < curNode {
		return connectionsAnswer{} // this node's page is behind the cursor
	}
	after := ""
	if s.nodeID == curNode {
		after = curClient
	}
	var pick []*session
	consider := func(ss *session) {
		if ss.state.Load() == stateConnected && ss.id > after && ss.matches(q) {
			pick = append(pick, ss)
		}
	}
	switch {
	case q.Client != "":
		if ss := s.sessions.byID(q.Client); ss != nil {
			consider(ss)
		}
	case q.User != "":
		for _, ss := range s.sessions.userSessions(q.User) {
			consider(ss)
		}
	default:
		s.sessions.each(consider)
	}
	slices.SortFunc(pick, func(a, b *session) int { return compareStrings(a.id, b.id) })
	var a connectionsAnswer
	if len(pick) > q.Limit {
		pick, a.More = pick[:q.Limit], true
	}
	for _, ss := range pick {
		a.Connections = append(a.Connections, ss.describe())
	}
	return a
}

// matches applies a query's filters other than Client and User lookups.
func (ss *session) matches(q *ConnectionsQuery) bool {
	ss.mu.Lock()
	user := ss.user
	subscribed := q.Channel == "" || ss.sub(q.Channel) != nil
	ss.mu.Unlock()
	if (q.User != "" && user != q.User) || (q.Client != "" && ss.id != q.Client) || !subscribed {
		return false
	}
	return q.Remote == "" || strings.HasPrefix(ss.conn.RemoteAddr(), q.Remote)
}

// describe returns the session's ConnectionInfo.
func (ss *session) describe() ConnectionInfo {
	ss.mu.Lock()
	ci := ConnectionInfo{
		Node: ss.s.nodeID, Client: ss.id, User: ss.user, Transport: "websocket", Codec: ss.codec().Name(),
		ConnectedAt: time.Unix(0, ss.created).UTC(), Subscriptions: make([]string, 0, len(ss.subs)), Admin: ss.admin,
	}
	for _, sub := range ss.subs {
		ci.Subscriptions = append(ci.Subscriptions, sub.Channel)
	}
	ss.mu.Unlock()
	slices.Sort(ci.Subscriptions)
	ci.Remote = ss.conn.RemoteAddr()
	ci.QueueFrames, ci.QueueBytes = ss.conn.QueueLen()
	return ci
}

// Connections lists the cluster's client connections, page by page.
func (s *Server) Connections(ctx context.Context, q ConnectionsQuery) (*ConnectionsPage, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, maxQueryLimit)
	answers, silent, err := s.queryNodes(ctx, "connections", &q)
	if err != nil {
		return nil, err
	}
	page := &ConnectionsPage{Connections: []ConnectionInfo{}, Unreachable: silent}
	more := false
	for node, body := range answers {
		var a connectionsAnswer
		if err := json.Unmarshal(body, &a); err != nil {
			s.log.Warn("node connections answer", "node", node, "err", err)
			continue
		}
		more = more || a.More
		page.Connections = append(page.Connections, a.Connections...)
	}
	slices.SortFunc(page.Connections, func(a, b ConnectionInfo) int {
		if c := compareStrings(a.Node, b.Node); c != 0 {
			return c
		}
		return compareStrings(a.Client, b.Client)
	})
	if len(page.Connections) > q.Limit {
		page.Connections, more = page.Connections[:q.Limit], true
	}
	if more && len(page.Connections) > 0 {
		last := page.Connections[len(page.Connections)-1]
		page.Cursor = last.Node + "/" + last.Client
	}
	return page, nil
}

// brokerName names the broker: its Name method if it has one, else its
// package ("memory", "nats", "redis").
func brokerName(b broker.Broker) string {
	if n, ok := b.(interface{ Name() string }); ok {
		return n.Name()
	}
	t := reflect.TypeOf(b)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if p := t.PkgPath(); p != "" {
		return path.Base(p)
	}
	return t.String()
}

// address is the address of the node's first listener ("" when it serves
// only through Handler).
func (s *Server) address() string {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	if len(s.listeners) == 0 {
		return ""
	}
	return s.listeners[0].Addr().String()
}
