package client

import (
	"context"

	"github.com/heraldhq/herald/protocol"
)

// PublishOptions are optional publish arguments.
type PublishOptions struct {
	// IdempotencyKey makes retries of this publish within the server's
	// window (default 2 min) a no-op returning the first position.
	IdempotencyKey string
}

// Publish publishes data into channel as this client and returns the
// position it got (zero for channels without history).
func (c *Client) Publish(ctx context.Context, channel string, data []byte, opts *PublishOptions) (StreamPosition, error) {
	req := &protocol.PublishRequest{Channel: channel, Data: data}
	if opts != nil {
		req.IdempotencyKey = opts.IdempotencyKey
	}
	m, err := c.call(ctx, &protocol.Command{Publish: req})
	if err != nil {
		return StreamPosition{}, err
	}
	return StreamPosition{Epoch: m.Publish.Epoch, Offset: m.Publish.Offset}, nil
}

// HistoryOptions select publications from history. Limit 0 returns only
// the current position; a negative Limit returns everything retained.
type HistoryOptions struct {
	Since   *StreamPosition
	Limit   int
	Reverse bool
	// Filter keeps only the publications read whose tags it matches (the
	// syntax of SubscribeOptions.Filter); Limit counts those read.
	Filter string
}

// History reads a channel's history.
func (c *Client) History(ctx context.Context, channel string, opts HistoryOptions) ([]Publication, StreamPosition, error) {
	m, err := c.call(ctx, &protocol.Command{History: &protocol.HistoryRequest{
		Channel: channel, Since: opts.Since, Limit: int32(opts.Limit), Reverse: opts.Reverse,
		Filter: opts.Filter,
	}})
	if err != nil {
		return nil, StreamPosition{}, err
	}
	out := make([]Publication, len(m.History.Publications))
	for i, p := range m.History.Publications {
		if p.Channel == "" {
			p.Channel = channel
		}
		out[i] = toPublication(p)
	}
	return out, StreamPosition{Epoch: m.History.Epoch, Offset: m.History.Offset}, nil
}

// Presence returns the channel's members by client id.
func (c *Client) Presence(ctx context.Context, channel string) (map[string]*ClientInfo, error) {
	m, err := c.call(ctx, &protocol.Command{Presence: &protocol.PresenceRequest{Channel: channel}})
	if err != nil {
		return nil, err
	}
	return m.Presence.Presence, nil
}

// PresenceStats returns the numbers of connections and distinct users in
// the channel.
func (c *Client) PresenceStats(ctx context.Context, channel string) (clients, users int, err error) {
	m, err := c.call(ctx, &protocol.Command{PresenceStats: &protocol.PresenceStatsRequest{Channel: channel}})
	if err != nil {
		return 0, 0, err
	}
	return int(m.PresenceStats.NumClients), int(m.PresenceStats.NumUsers), nil
}

// RPC calls an application method on the server.
func (c *Client) RPC(ctx context.Context, method string, data []byte) ([]byte, error) {
	m, err := c.call(ctx, &protocol.Command{RPC: &protocol.RPCRequest{Method: method, Data: data}})
	if err != nil {
		return nil, err
	}
	return m.RPC.Data, nil
}

// Ping measures a round trip to the server.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.call(ctx, &protocol.Command{Ping: &protocol.Empty{}})
	return err
}
