package herald

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// Shutdown drains the node: /readyz turns false, listeners close, every
// client gets a disconnect (3000) with a reconnect-after hint spread over
// the drain window, queues flush, and every goroutine is joined. If ctx
// ends first, the remaining connections are cut and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() { s.shutErr = s.shutdown(ctx) })
	return s.shutErr
}

// shutdown runs in this order, each step waiting for what the next one
// takes away:
//
//  1. refuse: readiness off, no new connection (listeners closed, upgrades
//     in flight finished, slow request heads cut);
//  2. drain: every session told to reconnect later; wait until all are
//     gone, the drain window ends, or ctx does;
//  3. cut the rest, and wait until every session's cleanup has run (each
//     is bounded by its broker calls' timeouts): no session is left to
//     call back into the server;
//  4. say goodbye to the other nodes, stop the server's own goroutines (the sweeper, presence refresh,
//     proxy refreshes) and wait for them; goTracked refuses new ones from
//     here on;
//  5. close the transport engine (its readers and writers end), then the
//     broker, which nothing uses any more.
func (s *Server) shutdown(ctx context.Context) error {
	s.ready.Store(false)
	s.gate.Lock()
	s.draining = true
	s.gate.Unlock()

	s.httpMu.Lock()
	servers := s.httpSrv
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.httpMu.Unlock()
	s.hsMu.Lock()
	for c := range s.handshaking {
		_ = c.SetReadDeadline(time.Now()) // end slow request heads now
	}
	s.hsMu.Unlock()
	var wg sync.WaitGroup
	for _, hs := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Shutdown(ctx); err != nil {
				hs.Close()
			}
		}()
	}
	s.handlers.Wait() // from here on no session is added

	window := s.cfg.DrainTimeout
	for _, ss := range s.sessions.all() {
		after := time.Duration(mrand.Int64N(int64(window)))
		ss.disconnect(protocol.DisconnectShutdown, after, false)
	}
	s.sessions.closeEchoes()

	// Queues flush and clients answer the close; the close timeout bounds
	// each connection, the drain window and ctx bound the whole.
	deadline := time.NewTimer(window)
	defer deadline.Stop()
	var err error
	select {
	case <-s.sessions.empty():
	case <-deadline.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	for _, ss := range s.sessions.all() {
		ss.conn.Abort(errors.New("herald: drain ended"))
	}
	// A session whose connection was closing on another goroutine when it
	// was cut reports its close from there, soon: wait for every cleanup.
	<-s.sessions.empty()
	wg.Wait()
	s.broadcast(&control{Op: "bye", From: s.nodeID}) // the other nodes forget it now

	if s.events != nil {
		s.events.stopTimers() // the other nodes settle this node's pending graces
	}
	s.cancel()
	close(s.quit)
	s.stopTracking()
	s.wg.Wait()
	if e := s.engine.Close(); e != nil && err == nil {
		err = e
	}
	bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e := s.broker.Close(bctx); e != nil && err == nil {
		err = e
	}
	s.log.Info("herald node stopped", "node", s.nodeID)
	return err
}

// goTracked runs f in a goroutine that Shutdown waits for. Once Shutdown
// has begun its final wait it runs nothing and returns false.
func (s *Server) goTracked(f func()) bool {
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	if s.untracked {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// stopTracking makes goTracked refuse new goroutines, so that s.wg.Wait
// never races an Add.
func (s *Server) stopTracking() {
	s.trackMu.Lock()
	s.untracked = true
	s.trackMu.Unlock()
}
