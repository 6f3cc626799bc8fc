package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

const defaultURL = "ws://localhost:8000/ws"

// subLine is one printed publication.
type subLine struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch,omitempty"`
	Data    json.RawMessage `json:"data"`
	B64     bool            `json:"b64,omitempty"`
	Gap     bool            `json:"gap,omitempty"`
}

func runSub(args []string) error {
	fs := flag.NewFlagSet("sub", flag.ExitOnError)
	url := fs.String("url", envOr("HERALD_URL", defaultURL), "server WebSocket URL")
	tok := fs.String("token", os.Getenv("HERALD_TOKEN"), "connection token (JWT)")
	recoverFile := fs.String("recover", "", "file that keeps channel positions across runs: recover what was missed")
	binary := fs.Bool("binary", false, "use the MessagePack encoding")
	_ = fs.Parse(args)
	if fs.NArg() == 0 {
		return errors.New("usage: herald sub [--url URL] [--token T] [--recover FILE] CHANNEL...")
	}
	positions := map[string]protocol.StreamPosition{}
	if *recoverFile != "" {
		b, err := os.ReadFile(*recoverFile)
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &positions); err != nil {
				return fmt.Errorf("%s: %w", *recoverFile, err)
			}
		case !os.IsNotExist(err):
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.Dial(ctx, *url, &client.Options{
		Token: *tok, Binary: *binary, Name: "herald-cli",
		OnDisconnect: func(e client.DisconnectEvent) {
			if !e.Reconnect {
				fmt.Fprintf(os.Stderr, "herald sub: disconnected: %d %s\n", e.Code, e.Reason)
			}
		},
	})
	if err != nil {
		return terminal(err)
	}
	defer c.Close()

	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	epochs := map[string]string{}
	save := func() error {
		if *recoverFile == "" {
			return nil
		}
		b, _ := json.Marshal(positions)
		tmp := *recoverFile + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Clean(*recoverFile))
	}
	var saveErr error
	for _, ch := range fs.Args() {
		opts := client.SubscribeOptions{
			OnSubscribed: func(e client.SubscribedEvent) {
				mu.Lock()
				defer mu.Unlock()
				epochs[e.Channel] = e.Position.Epoch
				if e.WasRecovering && !e.Recovered {
					fmt.Fprintf(os.Stderr, "herald sub: %s: could not recover missed publications (history window passed or stream reset); continuing from offset %d\n", e.Channel, e.Position.Offset)
				}
				if e.Recoverable && (!e.WasRecovering || !e.Recovered) {
					positions[e.Channel] = e.Position
					saveErr = save()
				}
			},
			OnPublication: func(p client.Publication) {
				mu.Lock()
				defer mu.Unlock()
				line := subLine{Channel: p.Channel, Offset: p.Offset, Epoch: epochs[p.Channel], Data: p.Data, Gap: p.Gap}
				if !json.Valid(p.Data) {
					b, _ := json.Marshal(p.Data) // base64
					line.Data, line.B64 = b, true
				}
				_ = enc.Encode(line)
				if p.Offset != 0 {
					positions[p.Channel] = protocol.StreamPosition{Epoch: epochs[p.Channel], Offset: p.Offset}
					saveErr = save()
				}
			},
		}
		if pos, ok := positions[ch]; ok {
			opts.Since = &pos
		}
		if _, err := c.Subscribe(ctx, ch, opts); err != nil {
			return fmt.Errorf("subscribe %s: %w", ch, err)
		}
	}
	select {
	case <-ctx.Done():
		return nil
	case <-c.Done():
		mu.Lock()
		defer mu.Unlock()
		if saveErr != nil {
			return saveErr
		}
		return terminal(c.Err())
	}
}

// terminal gives terminal refusals exit code 3, so scripts can tell them
// from transient failures.
func terminal(err error) error {
	var te *client.TerminalError
	if errors.As(err, &te) {
		return &exitError{code: 3, err: err}
	}
	return err
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
