package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// TestFirstLive checks the Lua search for the oldest unexpired history
// entry on streams with chosen append times, for every boundary.
func TestFirstLive(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: 2 * time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Redis at %s: %v", addr, err)
		}
		t.Skipf("no Redis at %s (set HERALD_TEST_REDIS): %v (skipping; with CI=true this fails)", addr, err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	key := "heraldtest-" + hex.EncodeToString(rnd[:]) + ":firstlive"
	defer c.Del(context.Background(), key)
	search := goredis.NewScript(luaHelpers + `return first_live(KEYS[1], tonumber(ARGV[1]))`)

	for _, n := range []int{1, 2, 3, 8, 33} {
		for _, from := range []int{1, 5} { // offset of the oldest entry (older ones trimmed)
			if err := c.Del(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				off := from + i
				// Entry times 100, 200, ... with a repeat, as a clock step
				// back clamped to the last time would give.
				tm := 100 * off
				if i == 1 {
					tm = 100 * (off - 1)
				}
				if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: key, ID: fmt.Sprintf("%d-0", off), Values: []any{"t", tm, "d", "x"}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			for cutoff := 0; cutoff <= 100*(from+n)+50; cutoff += 50 {
				want := -1 // none live
				for i := range n {
					off := from + i
					tm := 100 * off
					if i == 1 {
						tm = 100 * (off - 1)
					}
					if tm >= cutoff {
						want = off
						break
					}
				}
				got, err := search.Run(ctx, c, []string{key}, cutoff).Int()
				if err == goredis.Nil {
					got, err = -1, nil
				}
				if err != nil || got != want {
					t.Fatalf("n=%d from=%d cutoff=%d: got %d (err %v), want %d", n, from, cutoff, got, err, want)
				}
			}
		}
	}
}

// TestPublishExpiry: a publish leaves both keys of a channel with an
// expiry of at least their TTL, gives one again to a stream that vanished
// under a live meta hash (an evicted key), and trims what expired although
// it reads the oldest entry only when something may have.
func TestPublishExpiry(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: 2 * time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Redis at %s: %v", addr, err)
		}
		t.Skipf("no Redis at %s (set HERALD_TEST_REDIS): %v (skipping; with CI=true this fails)", addr, err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	prefix := "heraldtest-" + hex.EncodeToString(rnd[:])
	b, err := New(Config{Addrs: []string{addr}, Prefix: prefix, MetaTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close(context.Background()) }()
	const ch = "exp"
	k := keysFor(prefix, ch)
	defer c.Del(context.Background(), k.meta(), k.stream())
	publish := func(ttl time.Duration, n int) {
		t.Helper()
		batch := make([]*pubReq, n)
		for i := range batch {
			batch[i] = &pubReq{body: plainBody([]byte("x"), 1), window: 1000, size: 100, ttl: millis(ttl)}
		}
		if _, err := b.publishBatch(ch, k, batch); err != nil {
			t.Fatal(err)
		}
	}
	checkTTL := func(key string, lo, hi time.Duration) {
		t.Helper()
		d, err := c.PTTL(ctx, key).Result()
		if err != nil || d < lo || d > hi {
			t.Fatalf("%s: PTTL %v (%v), want %v to %v", key, d, err, lo, hi)
		}
	}
	publish(time.Minute, 3)
	checkTTL(k.stream(), time.Minute-5*time.Second, time.Minute+time.Second)
	checkTTL(k.meta(), time.Hour-5*time.Second, time.Hour+time.Second)

	// The stream goes, the meta hash stays: the next publish makes the
	// stream again, with an expiry.
	if err := c.Del(ctx, k.stream()).Err(); err != nil {
		t.Fatal(err)
	}
	publish(time.Minute, 1)
	checkTTL(k.stream(), time.Minute-5*time.Second, time.Minute+time.Second)
	if n, err := c.XLen(ctx, k.stream()).Result(); err != nil || n != 1 {
		t.Fatalf("stream made again: %d entries (%v)", n, err)
	}

	// A longer TTL than the expiry set: set again.
	publish(2*time.Minute, 1)
	checkTTL(k.stream(), 2*time.Minute-5*time.Second, 2*time.Minute+time.Second)

	// A shorter one: set again too.
	publish(time.Minute, 1)
	checkTTL(k.stream(), time.Minute-5*time.Second, time.Minute+time.Second)

	// Entries of a 2 s TTL: once they are older than that, the next
	// publish trims them all and keeps its own (and the key lives 2 s
	// more).
	publish(2*time.Second, 4)
	start := time.Now()
	for time.Since(start) < 2100*time.Millisecond {
		time.Sleep(50 * time.Millisecond) // waiting for the entries to expire, not asserting a time
	}
	publish(2*time.Second, 2)
	if n, err := c.XLen(ctx, k.stream()).Result(); err != nil || n != 2 {
		t.Fatalf("after expiry: %d entries (%v), want the 2 just published", n, err)
	}
	checkTTL(k.stream(), time.Millisecond, 2250*time.Millisecond)
}
