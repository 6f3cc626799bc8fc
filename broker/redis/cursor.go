package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
)

// Cursors (acknowledged positions) are kept per user in one hash,
// channel -> "offset|epoch", whose expiry every write renews: a user's
// cursors expire together, ttl after the last write to any of them. The
// key has the user as its hash tag, under "prefix:u:" so that it cannot
// meet a channel's keys.
func (b *Broker) cursorKey(user string) string {
	return keysFor(b.cfg.Prefix+":u", user).base + ":c"
}

// setCursorScript stores a cursor unless the one stored is of the same
// epoch and further. KEYS[1] the user's hash; ARGV channel, offset,
// epoch, ttl (ms). Offsets are compared as decimal strings (length, then
// bytes), exact for every uint64.
var setCursorScript = goredis.NewScript(`
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local v = ARGV[2] .. '|' .. ARGV[3]
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local off, ep = string.match(cur, '^(%d+)|(.*)$')
  if off and ep == ARGV[3] and less(ARGV[2], off) then v = cur end
end
redis.call('HSET', KEYS[1], ARGV[1], v)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// SetCursor implements broker.Broker.
func (b *Broker) SetCursor(ctx context.Context, user, ch string, pos broker.StreamPosition, ttl time.Duration) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	err := setCursorScript.Run(ctx, b.client, []string{b.cursorKey(user)}, ch, strconv.FormatUint(pos.Offset, 10), pos.Epoch, max(millis(ttl), 1)).Err()
	if err = b.cmdErr(err); err != nil {
		return fmt.Errorf("redis set cursor %q: %w", ch, err)
	}
	return nil
}

// Cursor implements broker.Broker.
func (b *Broker) Cursor(ctx context.Context, user, ch string) (broker.StreamPosition, bool, error) {
	if b.closed.Load() {
		return broker.StreamPosition{}, false, broker.ErrClosed
	}
	v, err := b.client.HGet(ctx, b.cursorKey(user), ch).Result()
	if errors.Is(err, goredis.Nil) {
		return broker.StreamPosition{}, false, nil
	}
	if err = b.cmdErr(err); err != nil {
		return broker.StreamPosition{}, false, fmt.Errorf("redis cursor %q: %w", ch, err)
	}
	off, epoch, ok := strings.Cut(v, "|")
	n, perr := strconv.ParseUint(off, 10, 64)
	if !ok || perr != nil {
		return broker.StreamPosition{}, false, fmt.Errorf("redis cursor %q: malformed %q", ch, v)
	}
	return broker.StreamPosition{Epoch: epoch, Offset: n}, true, nil
}
