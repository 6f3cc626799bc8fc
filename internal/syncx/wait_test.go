package syncx_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/syncx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestWait runs its cases one after the other, not in parallel: each one
// checks that no goroutine it started outlives it, Wait's own included,
// which goroutines of cases running beside it would disturb.
func TestWait(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancelExpired()

	tests := []struct {
		name  string
		ctx   context.Context
		count int  // wg's counter when Wait is called
		hold  bool // the counter stays above zero until Wait returned
		want  error
	}{
		{name: "zero counter", ctx: context.Background()},
		{name: "counter reaches zero", ctx: context.Background(), count: 3},
		{name: "canceled", ctx: canceled, count: 1, hold: true, want: context.Canceled},
		{name: "deadline exceeded", ctx: expired, count: 2, hold: true, want: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			var wg sync.WaitGroup
			wg.Add(tt.count)
			done := func() {
				for range tt.count {
					wg.Done()
				}
			}
			if !tt.hold {
				// With a context that is never done, Wait can only
				// return once these calls brought the counter to zero.
				go done()
			}
			// The error is ctx.Err() itself, not wrapped: callers wrap it
			// as they always did.
			if err := syncx.Wait(tt.ctx, &wg); err != tt.want {
				t.Errorf("Wait: %v, want %v", err, tt.want)
			}
			if tt.hold {
				// Wait returned early; its goroutine ends once the
				// counter reaches zero (goleak.VerifyNone polls for it).
				done()
			}
		})
	}
}
