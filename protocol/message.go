package protocol

// Command is a message from client to server. Exactly one of the request
// fields is set. ID is required for every request except Pong, which answers
// a server ping and gets no reply.
type Command struct {
	ID uint64 `json:"id,omitempty" msgpack:"id,omitempty"`

	Connect       *ConnectRequest       `json:"connect,omitempty" msgpack:"connect,omitempty"`
	Subscribe     *SubscribeRequest     `json:"subscribe,omitempty" msgpack:"subscribe,omitempty"`
	Unsubscribe   *UnsubscribeRequest   `json:"unsubscribe,omitempty" msgpack:"unsubscribe,omitempty"`
	Publish       *PublishRequest       `json:"publish,omitempty" msgpack:"publish,omitempty"`
	Presence      *PresenceRequest      `json:"presence,omitempty" msgpack:"presence,omitempty"`
	PresenceStats *PresenceStatsRequest `json:"presence_stats,omitempty" msgpack:"presence_stats,omitempty"`
	History       *HistoryRequest       `json:"history,omitempty" msgpack:"history,omitempty"`
	RPC           *RPCRequest           `json:"rpc,omitempty" msgpack:"rpc,omitempty"`
	Refresh       *RefreshRequest       `json:"refresh,omitempty" msgpack:"refresh,omitempty"`
	Ping          *Empty                `json:"ping,omitempty" msgpack:"ping,omitempty"`
	Pong          *Empty                `json:"pong,omitempty" msgpack:"pong,omitempty"`
	// Ack acknowledges publications of channels whose subscribe result
	// had Ack set. Unlike other requests it may come without ID: it then
	// gets no reply.
	Ack *AckRequest `json:"ack,omitempty" msgpack:"ack,omitempty"`
}

// Method returns the name of the request the command carries, or "" if it
// carries none.
func (c *Command) Method() string {
	switch {
	case c.Connect != nil:
		return "connect"
	case c.Subscribe != nil:
		return "subscribe"
	case c.Unsubscribe != nil:
		return "unsubscribe"
	case c.Publish != nil:
		return "publish"
	case c.Presence != nil:
		return "presence"
	case c.PresenceStats != nil:
		return "presence_stats"
	case c.History != nil:
		return "history"
	case c.RPC != nil:
		return "rpc"
	case c.Refresh != nil:
		return "refresh"
	case c.Ping != nil:
		return "ping"
	case c.Pong != nil:
		return "pong"
	case c.Ack != nil:
		return "ack"
	}
	return ""
}

// ServerMessage is a message from server to client. With a non-zero ID it is
// the reply to the command of that ID and carries either Error or the result
// field named like the command. With ID 0 it is a push: exactly one of Pub,
// Join, Leave, Subscribe, Unsubscribe, Message, Refresh, Disconnect or Ping.
type ServerMessage struct {
	ID    uint64 `json:"id,omitempty" msgpack:"id,omitempty"`
	Error *Error `json:"error,omitempty" msgpack:"error,omitempty"`

	Connect       *ConnectResult       `json:"connect,omitempty" msgpack:"connect,omitempty"`
	Subscribe     *SubscribeResult     `json:"subscribe,omitempty" msgpack:"subscribe,omitempty"`
	Unsubscribe   *UnsubscribeResult   `json:"unsubscribe,omitempty" msgpack:"unsubscribe,omitempty"`
	Publish       *PublishResult       `json:"publish,omitempty" msgpack:"publish,omitempty"`
	Presence      *PresenceResult      `json:"presence,omitempty" msgpack:"presence,omitempty"`
	PresenceStats *PresenceStatsResult `json:"presence_stats,omitempty" msgpack:"presence_stats,omitempty"`
	History       *HistoryResult       `json:"history,omitempty" msgpack:"history,omitempty"`
	RPC           *RPCResult           `json:"rpc,omitempty" msgpack:"rpc,omitempty"`
	Refresh       *RefreshResult       `json:"refresh,omitempty" msgpack:"refresh,omitempty"`
	Ping          *Empty               `json:"ping,omitempty" msgpack:"ping,omitempty"`
	Ack           *Empty               `json:"ack,omitempty" msgpack:"ack,omitempty"`

	// Pushes only.
	Pub        *Publication    `json:"pub,omitempty" msgpack:"pub,omitempty"`
	Join       *PresenceEvent  `json:"join,omitempty" msgpack:"join,omitempty"`
	Leave      *PresenceEvent  `json:"leave,omitempty" msgpack:"leave,omitempty"`
	Message    *MessagePush    `json:"message,omitempty" msgpack:"message,omitempty"`
	Disconnect *DisconnectPush `json:"disconnect,omitempty" msgpack:"disconnect,omitempty"`
	// PresenceStale and PresenceSync go to subscribers with join/leave.
	PresenceStale *PresenceStale `json:"presence_stale,omitempty" msgpack:"presence_stale,omitempty"`
	PresenceSync  *PresenceSync  `json:"presence_sync,omitempty" msgpack:"presence_sync,omitempty"`
}

// PresenceStale tells a subscriber with join/leave that join and leave
// events of the channel may be lost from now on (the node lost its
// broker): the members it keeps may be wrong until a PresenceSync.
type PresenceStale struct {
	Channel string `json:"channel" msgpack:"channel"`
}

// PresenceSync carries the channel's current members, by client id, once
// the broker is back after a PresenceStale (or after another node could
// not announce its joins and leaves). It replaces the members the
// subscriber keeps; join and leave events after it apply to it.
type PresenceSync struct {
	Channel  string                 `json:"channel" msgpack:"channel"`
	Presence map[string]*ClientInfo `json:"presence" msgpack:"presence"`
}

// Empty is the body of ping and pong.
type Empty struct{}

// StreamPosition identifies a place in a channel's history stream.
type StreamPosition struct {
	Epoch  string `json:"epoch" msgpack:"epoch"`
	Offset uint64 `json:"offset" msgpack:"offset"`
}

// ClientInfo describes a connection: in presence, join/leave and as the
// publisher of a client publication.
type ClientInfo struct {
	Client string `json:"client" msgpack:"client"`
	User   string `json:"user" msgpack:"user"`
	// ConnInfo is the connection's info claim, Data encoded.
	ConnInfo Data `json:"conn_info,omitempty" msgpack:"conn_info,omitempty"`
}

// Publication is a message published into a channel. Offset is 0 for
// channels without history.
type Publication struct {
	Channel string            `json:"channel,omitempty" msgpack:"channel,omitempty"`
	Offset  uint64            `json:"offset,omitempty" msgpack:"offset,omitempty"`
	Data    Data              `json:"data" msgpack:"data"`
	Info    *ClientInfo       `json:"info,omitempty" msgpack:"info,omitempty"`
	Tags    map[string]string `json:"tags,omitempty" msgpack:"tags,omitempty"`
	Time    int64             `json:"time,omitempty" msgpack:"time,omitempty"` // unix milliseconds
	// Gap marks the first publication a connection receives after the server
	// dropped publications of this channel for it (slow-client policy
	// "drop"). The client should recover from its last position.
	Gap bool `json:"gap,omitempty" msgpack:"gap,omitempty"`
	// Delta marks a publication whose Data is a Fossil delta (package
	// protocol/fossil) against the Data of the previous publication the
	// subscription received, not the data itself. Only subscriptions that
	// asked for deltas receive such publications. In the JSON encoding the
	// delta travels as a JSON string (its UTF-8 bytes are the delta), or
	// in base64 with "b64": true when it is not valid UTF-8.
	Delta bool `json:"delta,omitempty" msgpack:"delta,omitempty"`
	// Redelivered marks a publication of a channel with acknowledgements
	// sent again because it was not acknowledged in time. The client may
	// have received it before: it hands each offset to the application
	// once.
	Redelivered bool `json:"redelivered,omitempty" msgpack:"redelivered,omitempty"`
	// Skipped counts the publications of the same key this one replaced
	// for a subscriber that fell behind on a conflating channel
	// (slow-client policy "conflate"): the subscriber did not receive
	// them, by design. Zero otherwise.
	Skipped uint32 `json:"skipped,omitempty" msgpack:"skipped,omitempty"`
	// Trace is the W3C traceparent of a traced publish, which brokers
	// carry between nodes so that each node's fan-out joins the trace.
	// It is never sent to clients.
	Trace string `json:"-" msgpack:"-"`
}

// ConnectRequest opens a session. Token is a JWT; empty means anonymous.
// APIKey instead connects a backend with one of the server's API keys: a
// read-only observer of every channel, the events channel included.
type ConnectRequest struct {
	Token   string `json:"token,omitempty" msgpack:"token,omitempty"`
	APIKey  string `json:"api_key,omitempty" msgpack:"api_key,omitempty"`
	Name    string `json:"name,omitempty" msgpack:"name,omitempty"`
	Version string `json:"version,omitempty" msgpack:"version,omitempty"`
	// Subs subscribes within connect (fewer round trips on reconnect).
	Subs map[string]*SubscribeRequest `json:"subs,omitempty" msgpack:"subs,omitempty"`
}

// ConnectResult is the reply to connect.
type ConnectResult struct {
	Client  string `json:"client" msgpack:"client"`
	Version string `json:"version" msgpack:"version"`
	// Ping is the server ping interval in seconds; the client answers each
	// ping push with a pong command and treats a silence longer than Ping
	// plus its own margin as a dead connection.
	Ping uint32 `json:"ping,omitempty" msgpack:"ping,omitempty"`
	// Expires is set when the credentials expire; TTL is the seconds left.
	Expires bool                        `json:"expires,omitempty" msgpack:"expires,omitempty"`
	TTL     uint32                      `json:"ttl,omitempty" msgpack:"ttl,omitempty"`
	Subs    map[string]*SubscribeResult `json:"subs,omitempty" msgpack:"subs,omitempty"`
	Data    Data                        `json:"data,omitempty" msgpack:"data,omitempty"`
}

// SubscribeRequest subscribes to a channel. With Recover set the server
// replays publications after (Epoch, Offset).
type SubscribeRequest struct {
	Channel string `json:"channel,omitempty" msgpack:"channel,omitempty"`
	Token   string `json:"token,omitempty" msgpack:"token,omitempty"`
	Recover bool   `json:"recover,omitempty" msgpack:"recover,omitempty"`
	Epoch   string `json:"epoch,omitempty" msgpack:"epoch,omitempty"`
	Offset  uint64 `json:"offset,omitempty" msgpack:"offset,omitempty"`
	// Filter, when set, makes the subscription receive only the
	// publications whose tags it matches, live and recovered (the filter
	// syntax is in docs/protocol.md). A filter that does not parse is
	// refused with ErrBadFilter.
	Filter string `json:"filter,omitempty" msgpack:"filter,omitempty"`
	// Delta asks for publications as deltas against the previous one the
	// subscription received, in the named format: DeltaFossil is the only
	// one. The server grants it (SubscribeResult.Delta) in namespaces with
	// deltas on, and ignores it elsewhere; another format is refused with
	// ErrBadRequest.
	Delta string `json:"delta,omitempty" msgpack:"delta,omitempty"`
	// Acked, on a channel with acknowledgements, recovers from the last
	// offset the connection's user acknowledged on any connection (kept
	// by the server per user and channel) when it is further than the
	// request's own position, or when the request has none.
	Acked bool `json:"acked,omitempty" msgpack:"acked,omitempty"`
}

// AckRequest acknowledges, per channel, every publication up to and
// including an offset (cumulative). Offsets maps channel to offset.
type AckRequest struct {
	Offsets map[string]uint64 `json:"offsets" msgpack:"offsets"`
}

// DeltaFossil is the delta format of protocol v1: the Fossil delta
// format (package protocol/fossil).
const DeltaFossil = "fossil"

// SubscribeResult is the reply to subscribe, and the server-side subscribe
// push (with Channel set).
type SubscribeResult struct {
	Channel string `json:"channel,omitempty" msgpack:"channel,omitempty"`
	// Recoverable: the channel keeps history, so Epoch and Offset are
	// meaningful and a later subscribe may recover from them.
	Recoverable bool   `json:"recoverable,omitempty" msgpack:"recoverable,omitempty"`
	Epoch       string `json:"epoch,omitempty" msgpack:"epoch,omitempty"`
	Offset      uint64 `json:"offset,omitempty" msgpack:"offset,omitempty"`
	// WasRecovering: the request asked to recover; Recovered: every missed
	// publication is in Publications (in order). With WasRecovering and not
	// Recovered the client has a gap it must fill by other means.
	WasRecovering bool           `json:"was_recovering,omitempty" msgpack:"was_recovering,omitempty"`
	Recovered     bool           `json:"recovered,omitempty" msgpack:"recovered,omitempty"`
	Publications  []*Publication `json:"publications,omitempty" msgpack:"publications,omitempty"`
	JoinLeave     bool           `json:"join_leave,omitempty" msgpack:"join_leave,omitempty"`
	// Filtered: the subscription has a filter, so the offsets it receives
	// skip those of the publications filtered out; a skipped offset is not
	// a gap (a lost publication is always announced: Gap, or a disconnect).
	Filtered bool `json:"filtered,omitempty" msgpack:"filtered,omitempty"`
	// Delta: the subscription receives publications as deltas (those
	// marked Delta) in the format it asked for.
	Delta bool `json:"delta,omitempty" msgpack:"delta,omitempty"`
	// Ack: the channel wants its publications acknowledged (ack command);
	// those not acknowledged in time are sent again, marked Redelivered.
	Ack bool `json:"ack,omitempty" msgpack:"ack,omitempty"`
	// Conflated: the channel's slow-client policy is "conflate", so the
	// offsets the subscription receives skip those of publications
	// replaced by a newer one of their key; a skipped offset is not a gap.
	Conflated bool `json:"conflated,omitempty" msgpack:"conflated,omitempty"`
}

// UnsubscribeRequest leaves a channel.
type UnsubscribeRequest struct {
	Channel string `json:"channel" msgpack:"channel"`
}

// UnsubscribeResult is the reply to unsubscribe, and the server-side
// unsubscribe push (with Channel, Code and Reason set).
type UnsubscribeResult struct {
	Channel string `json:"channel,omitempty" msgpack:"channel,omitempty"`
	Code    uint32 `json:"code,omitempty" msgpack:"code,omitempty"`
	Reason  string `json:"reason,omitempty" msgpack:"reason,omitempty"`
}

// PublishRequest publishes Data into Channel as this client.
type PublishRequest struct {
	Channel        string `json:"channel" msgpack:"channel"`
	Data           Data   `json:"data" msgpack:"data"`
	IdempotencyKey string `json:"idempotency_key,omitempty" msgpack:"idempotency_key,omitempty"`
}

// PublishResult gives the position the publication got (Offset 0 and no
// Epoch for channels without history).
type PublishResult struct {
	Epoch  string `json:"epoch,omitempty" msgpack:"epoch,omitempty"`
	Offset uint64 `json:"offset,omitempty" msgpack:"offset,omitempty"`
}

// PresenceRequest asks for the members of a channel.
type PresenceRequest struct {
	Channel string `json:"channel" msgpack:"channel"`
}

// PresenceResult maps client id to member.
type PresenceResult struct {
	Presence map[string]*ClientInfo `json:"presence" msgpack:"presence"`
}

// PresenceStatsRequest asks for the member counts of a channel.
type PresenceStatsRequest struct {
	Channel string `json:"channel" msgpack:"channel"`
}

// PresenceStatsResult counts connections and distinct users.
type PresenceStatsResult struct {
	NumClients uint32 `json:"num_clients" msgpack:"num_clients"`
	NumUsers   uint32 `json:"num_users" msgpack:"num_users"`
}

// HistoryRequest reads a channel's history. Without Since it reads from the
// start of the retained window (or from the end with Reverse). Limit 0 means
// only the current position; a negative Limit means all retained.
type HistoryRequest struct {
	Channel string          `json:"channel" msgpack:"channel"`
	Since   *StreamPosition `json:"since,omitempty" msgpack:"since,omitempty"`
	Limit   int32           `json:"limit,omitempty" msgpack:"limit,omitempty"`
	Reverse bool            `json:"reverse,omitempty" msgpack:"reverse,omitempty"`
	// Filter, when set, keeps only the publications read whose tags it
	// matches (Limit counts the publications read, before the filter).
	Filter string `json:"filter,omitempty" msgpack:"filter,omitempty"`
}

// HistoryResult holds publications and the stream's current position.
type HistoryResult struct {
	Publications []*Publication `json:"publications" msgpack:"publications"`
	Epoch        string         `json:"epoch" msgpack:"epoch"`
	Offset       uint64         `json:"offset" msgpack:"offset"`
}

// RPCRequest calls an application method.
type RPCRequest struct {
	Method string `json:"method" msgpack:"method"`
	Data   Data   `json:"data,omitempty" msgpack:"data,omitempty"`
}

// RPCResult is the application's answer.
type RPCResult struct {
	Data Data `json:"data,omitempty" msgpack:"data,omitempty"`
}

// RefreshRequest replaces the connection's token before it expires.
type RefreshRequest struct {
	Token string `json:"token" msgpack:"token"`
}

// RefreshResult tells when the new credentials expire.
type RefreshResult struct {
	Expires bool   `json:"expires,omitempty" msgpack:"expires,omitempty"`
	TTL     uint32 `json:"ttl,omitempty" msgpack:"ttl,omitempty"`
}

// PresenceEvent is a join or leave push.
type PresenceEvent struct {
	Channel string     `json:"channel" msgpack:"channel"`
	Info    ClientInfo `json:"info" msgpack:"info"`
}

// MessagePush carries data sent to one connection rather than a channel.
type MessagePush struct {
	Data Data `json:"data" msgpack:"data"`
}

// DisconnectPush precedes the close frame. ReconnectAfter is a hint in
// milliseconds: a reconnecting client waits at least that long.
type DisconnectPush struct {
	Code           uint32 `json:"code" msgpack:"code"`
	Reason         string `json:"reason" msgpack:"reason"`
	Reconnect      bool   `json:"reconnect" msgpack:"reconnect"`
	ReconnectAfter uint32 `json:"reconnect_after,omitempty" msgpack:"reconnect_after,omitempty"`
}
