package syncx

import (
	"context"
	"sync"
)

// Wait waits until wg's counter is zero or ctx is done, whichever comes
// first. It returns nil in the first case and ctx.Err(), unwrapped, in the
// second.
//
// Wait starts one goroutine, which waits for wg and ends when wg's counter
// reaches zero: when Wait returned early because ctx was done, that
// goroutine is still waiting, so a caller that must know it has ended
// calls wg.Wait() afterwards.
func Wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
