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

// redisCPU reads the CPU time the Redis server used so far (INFO cpu:
// its main thread, user and system), in µs.
func redisCPU(ctx context.Context, raw *goredis.Client) float64 {
	s, _ := raw.Info(ctx, "cpu").Result()
	var sum float64
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread" {
			n, _ := strconv.ParseFloat(v, 64)
			sum += n * 1e6
		}
	}
	return sum
}

// BenchmarkPublishBatch runs the publish script for batches of 1, 5 and
// 20 publications of 100 bytes on a channel with history (1,000 for an
// hour), as a hot channel's groups do, and reports the CPU time of the
// Redis server per publication (redis-cpu-µs/pub, from INFO cpu: the
// call's parsing and answer included, and whatever other clients of the
// server had it do meanwhile).
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
			c0 := redisCPU(ctx, raw)
			b.ResetTimer()
			for range b.N {
				if _, err := br.publishBatch(ch, k, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			c1 := redisCPU(ctx, raw)
			b.ReportMetric((c1-c0)/float64(b.N*n), "redis-cpu-µs/pub")
		})
	}
}
