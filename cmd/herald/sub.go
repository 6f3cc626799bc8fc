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

const subUsage = `usage: herald sub [--url URL] [--token T | --key K] [--recover FILE] [--binary] [--transport ws|http-stream|sse] [CHANNEL...]

Subscribes to each CHANNEL and prints, one JSON object a line:

  publications, of the CHANNELs and of the channels the server subscribed
  the connection to (the token's channels claim, the server API's subscribe):
    {"channel":"C","offset":N,"epoch":"E","data":D}
    ("b64":true when D is binary data as base64; "gap":true after a drop)
  the server API's subscribe, and each server-side subscription at connect
  and after a reconnect (recovered: every missed publication follows):
    {"subscribed":"C","recoverable":true,"epoch":"E","offset":N,"recovered":true}
  the server's unsubscribe of a channel (code 2000-2499: over; 2500-2999,
  "resubscribe":true: a CHANNEL is subscribed again, recovering):
    {"unsubscribed":"C","code":2000,"reason":"R"}
  data sent to this connection alone (the server API's send):
    {"message":D}  ("b64":true when D is binary data as base64)

With no CHANNEL it prints only what the server sends on its own.

With --key (an API key) it connects as a backend, which may read any
channel: 'herald sub --key K --recover events.json '$events'' follows the
lifecycle events (each publication's data is one event) and resumes where
it stopped.

Flags:
`

// subLine is one printed publication.
type subLine struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch,omitempty"`
	Data    json.RawMessage `json:"data"`
	B64     bool            `json:"b64,omitempty"`
	Gap     bool            `json:"gap,omitempty"`
}

// subscribedLine is one printed server-side subscription.
type subscribedLine struct {
	Subscribed    string `json:"subscribed"`
	Recoverable   bool   `json:"recoverable,omitempty"`
	Epoch         string `json:"epoch,omitempty"`
	Offset        uint64 `json:"offset"`
	WasRecovering bool   `json:"was_recovering,omitempty"`
	Recovered     bool   `json:"recovered,omitempty"`
}

// unsubscribedLine is one printed unsubscribe push.
type unsubscribedLine struct {
	Unsubscribed string `json:"unsubscribed"`
	Code         uint32 `json:"code"`
	Reason       string `json:"reason"`
	Resubscribe  bool   `json:"resubscribe,omitempty"`
}

// messageLine is one printed message push.
type messageLine struct {
	Message json.RawMessage `json:"message"`
	B64     bool            `json:"b64,omitempty"`
}

// jsonData returns data as it goes in a line: itself if it is JSON, else
// a base64 string and true.
func jsonData(data []byte) (json.RawMessage, bool) {
	if len(data) > 0 && json.Valid(data) {
		return data, false
	}
	b, _ := json.Marshal(data) // base64
	return b, true
}

func runSub(args []string) error {
	fs := flag.NewFlagSet("sub", flag.ExitOnError)
	url := fs.String("url", envOr("HERALD_URL", defaultURL), "server WebSocket URL")
	tok := fs.String("token", os.Getenv("HERALD_TOKEN"), "connection token (JWT)")
	key := fs.String("key", "", "connect as a backend with an API key (reads any channel, e.g. the lifecycle events channel $events)")
	recoverFile := fs.String("recover", "", "file that keeps the CHANNELs' positions across runs: recover what was missed")
	binary := fs.Bool("binary", false, "use the MessagePack encoding")
	transport := fs.String("transport", "ws", "ws (WebSocket), http-stream (HTTP streaming: one long response, commands as POSTs) or sse (Server-Sent Events: CHANNELs only, JSON; recovers by event id)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), subUsage)
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	tr := client.TransportWebSocket
	switch *transport {
	case "ws", "websocket":
	case "http-stream":
		tr = client.TransportHTTPStream
	case "sse":
		if *key != "" || *recoverFile != "" || *binary {
			return errors.New("--transport sse takes no --key, --recover or --binary")
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return subSSE(ctx, *url, *tok, fs.Args())
	default:
		return fmt.Errorf("--transport: %q is not ws, http-stream or sse", *transport)
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
	// mu serialises the lines and guards epochs, positions and saveErr.
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	epochs := map[string]string{}
	printLine := func(v any) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(v)
	}
	unsubscribed := func(e client.UnsubscribedEvent) {
		printLine(unsubscribedLine{Unsubscribed: e.Channel, Code: e.Code, Reason: e.Reason, Resubscribe: e.Resubscribe})
	}
	c, err := client.Dial(ctx, *url, &client.Options{
		Token: *tok, APIKey: *key, Binary: *binary, Name: "herald-cli", Transport: tr,
		OnDisconnect: func(e client.DisconnectEvent) {
			if !e.Reconnect && ctx.Err() == nil { // not our own close on a signal
				fmt.Fprintf(os.Stderr, "herald sub: disconnected: %d %s\n", e.Code, e.Reason)
			}
		},
		OnServerSubscribed: func(e client.SubscribedEvent) {
			mu.Lock()
			defer mu.Unlock()
			epochs[e.Channel] = e.Position.Epoch
			if e.WasRecovering && !e.Recovered {
				fmt.Fprintf(os.Stderr, "herald sub: %s: could not recover missed publications; continuing from offset %d\n", e.Channel, e.Position.Offset)
			}
			_ = enc.Encode(subscribedLine{
				Subscribed: e.Channel, Recoverable: e.Recoverable, Epoch: e.Position.Epoch, Offset: e.Position.Offset,
				WasRecovering: e.WasRecovering, Recovered: e.Recovered,
			})
		},
		OnServerPublication: func(p client.Publication) {
			mu.Lock()
			defer mu.Unlock()
			line := subLine{Channel: p.Channel, Offset: p.Offset, Epoch: epochs[p.Channel], Gap: p.Gap}
			line.Data, line.B64 = jsonData(p.Data)
			_ = enc.Encode(line)
		},
		OnServerUnsubscribed: unsubscribed,
		OnMessage: func(data []byte) {
			var line messageLine
			line.Message, line.B64 = jsonData(data)
			printLine(line)
		},
	})
	if err != nil {
		return terminal(err)
	}
	defer c.Close()

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
			OnServerUnsubscribed: unsubscribed,
			OnPublication: func(p client.Publication) {
				mu.Lock()
				defer mu.Unlock()
				line := subLine{Channel: p.Channel, Offset: p.Offset, Epoch: epochs[p.Channel], Gap: p.Gap}
				line.Data, line.B64 = jsonData(p.Data)
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
