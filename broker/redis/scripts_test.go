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
