package redis

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// evalshaUsec reads the time Redis reports for its EVALSHA calls so far
// (INFO commandstats), in µs.
func evalshaUsec(ctx context.Context, raw *goredis.Client) (calls, usec float64) {
	s, _ := raw.Info(ctx, "commandstats").Result()
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				calls = n
			case "usec":
				usec = n
			}
		}
	}
	return calls, usec
}

// BenchmarkPublishBatch runs the publish script for batches of 1, 5 and
// 20 publications of 100 bytes on a channel with history (1,000 for an
// hour), as a hot channel's groups do, and reports the time Redis spent
// in the script per publication (redis-µs/pub, from INFO commandstats;
// other clients' EVALSHA calls meanwhile count too).
func BenchmarkPublishBatch(b *testing.B) {
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	ctx := context.Background()
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	if err := raw.Ping(ctx).Err(); err != nil {
		b.Skipf("no Redis at %s: %v", addr, err)
	}
	for _, n := range []int{1, 5, 20} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			prefix := "heraldbench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			br, err := New(Config{Addrs: []string{addr}, Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = br.Close(ctx) }()
			const ch = "hot"
			k := keysFor(prefix, ch)
			defer raw.Del(ctx, k.meta(), k.stream())
			body := plainBody([]byte(`"`+strings.Repeat("x", 90)+`"`), time.Now().UnixMilli())
			batch := make([]*pubReq, n)
			for i := range batch {
				batch[i] = &pubReq{body: body, window: 60000, size: 1000, ttl: 3600000}
			}
			// Fill the history first, so that every call trims.
			for range 1000/n + 1 {
				if _, err := br.publishBatch(ch, k, batch); err != nil {
					b.Fatal(err)
				}
			}
			c0, u0 := evalshaUsec(ctx, raw)
			b.ResetTimer()
			for range b.N {
				if _, err := br.publishBatch(ch, k, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			c1, u1 := evalshaUsec(ctx, raw)
			if c1 > c0 {
				b.ReportMetric((u1-u0)/(c1-c0)/float64(n), "redis-µs/pub")
			}
		})
	}
}
