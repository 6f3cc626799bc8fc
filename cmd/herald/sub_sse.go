package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// subSSE is herald sub --transport sse: it reads GET /sse as a browser's
// EventSource does, printing the same lines as the other transports, and
// reconnects with the last event id, which recovers what was missed.
func subSSE(ctx context.Context, wsURL, token string, channels []string) error {
	if len(channels) == 0 {
		return errors.New("--transport sse needs at least one CHANNEL")
	}
	u, err := url.Parse(wsURL)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/ws"), "/") + "/sse"
	q := url.Values{"channel": channels}
	if token != "" {
		q.Set("token", token)
	}
	u.RawQuery = q.Encode()
	enc := json.NewEncoder(os.Stdout)
	epochs := map[string]string{}
	lastID := ""
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		d, err := readSSE(ctx, u.String(), &lastID, enc, epochs)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case d != nil && !d.Reconnect:
			return &exitError{code: 3, err: fmt.Errorf("disconnected: %d %s", d.Code, d.Reason)}
		case d != nil:
			wait = time.Duration(d.ReconnectAfter) * time.Millisecond
		case err != nil:
			fmt.Fprintf(os.Stderr, "herald sub: %v; reconnecting\n", err)
			wait = time.Second
		}
		wait = max(wait, 200*time.Millisecond)
	}
}

// readSSE reads one stream until it ends; it returns the disconnect push
// that ended it, if any.
func readSSE(ctx context.Context, u string, lastID *string, enc *json.Encoder, epochs map[string]string) (*protocol.DisconnectPush, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *lastID != "" {
		req.Header.Set("Last-Event-ID", *lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &protocol.DisconnectPush{Code: uint32(resp.StatusCode), Reason: strings.TrimSpace(string(msg))}, nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var id, data string
	var disc *protocol.DisconnectPush
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		case line == "" && data != "":
			var m protocol.ServerMessage
			if err := protocol.JSON.DecodeServerMessage([]byte(data), &m); err != nil {
				return nil, fmt.Errorf("bad event: %w", err)
			}
			if id != "" {
				*lastID = id
			}
			id, data = "", ""
			switch {
			case m.Error != nil:
				fmt.Fprintf(os.Stderr, "herald sub: connect refused: %d %s\n", m.Error.Code, m.Error.Message)
			case m.Connect != nil:
				for ch, r := range m.Connect.Subs {
					epochs[ch] = r.Epoch
					if r.WasRecovering && !r.Recovered {
						fmt.Fprintf(os.Stderr, "herald sub: %s: could not recover missed publications; continuing from offset %d\n", ch, r.Offset)
					}
				}
			case m.Pub != nil:
				line := subLine{Channel: m.Pub.Channel, Offset: m.Pub.Offset, Epoch: epochs[m.Pub.Channel], Gap: m.Pub.Gap}
				line.Data, line.B64 = jsonData(m.Pub.Data)
				_ = enc.Encode(line)
			case m.Message != nil:
				var ml messageLine
				ml.Message, ml.B64 = jsonData(m.Message.Data)
				_ = enc.Encode(ml)
			case m.Disconnect != nil:
				disc = m.Disconnect
			}
		}
	}
	if disc != nil {
		return disc, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("stream ended")
}
