package transport

import (
	"math"
	"time"
)

// Options bound a connection. The zero value of each field selects the
// default stated on it.
type Options struct {
	// MaxMessageSize is the largest message accepted, after reassembly of
	// fragments. Larger ones close the connection with 1009. Default 64 KiB.
	MaxMessageSize int
	// QueueMaxBytes and QueueMaxMessages bound the outbound queue. A frame
	// that does not fit is refused with ErrQueueFull (a frame always fits an
	// empty queue). Defaults 1 MiB and 4096; at most 2^31-1 messages.
	QueueMaxBytes    int
	QueueMaxMessages int
	// WriteTimeout bounds one blocking write in the goroutine engine.
	// Default 10s.
	WriteTimeout time.Duration
	// CloseTimeout is how long to wait for the peer's close frame after
	// sending ours. Default 2s.
	CloseTimeout time.Duration

	ready bool // defaults applied: connections share this Options
}

// Defaults returns a copy of o with defaults applied, for many
// connections to share.
func (o *Options) Defaults() *Options { return o.withDefaults() }

func (o *Options) withDefaults() *Options {
	if o.ready {
		return o
	}
	c := *o
	c.ready = true
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 64 << 10
	}
	if c.QueueMaxBytes <= 0 {
		c.QueueMaxBytes = 1 << 20
	}
	if c.QueueMaxMessages <= 0 {
		c.QueueMaxMessages = 4096
	}
	c.QueueMaxMessages = min(c.QueueMaxMessages, math.MaxInt32) // the queue counts in an int32
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 2 * time.Second
	}
	return &c
}
