package main_test

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
)

// apiPost calls the server API with key k and fails the test unless it
// answers 200.
func apiPost(t *testing.T, api, method, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", api+"/api/"+method, strings.NewReader(body))
	req.Header.Set("Authorization", "apikey k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: status %d", method, body, resp.StatusCode)
	}
}

// TestSubPrintsServerPushes: besides its channels' publications, herald
// sub prints what the server API does to its connection: a subscribe
// (then that channel's publications), messages, and unsubscribes, of a
// server-side channel and of one of its own channels.
func TestSubPrintsServerPushes(t *testing.T) {
	t.Parallel()
	_, addr := serve(t, []string{"HERALD_API_KEY=k"}, "--dev", "--token-secret", "s3cret")
	url, api := "ws://"+addr+"/ws", "http://"+addr
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"json", nil},
		{"msgpack", []string{"--binary"}},
		{"http-stream", []string{"--transport", "http-stream"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			user, own, feed := "sub-"+c.name, "own-"+c.name, "feed-"+c.name
			tok, err := run(t, nil, "token", "--secret", "s3cret", "--user", user, "--ttl", "1h")
			if err != nil {
				t.Fatal(err)
			}
			args := append([]string{"sub", "--url", url, "--token", strings.TrimSpace(tok)}, c.flags...)
			sub := start(t, nil, append(args, own)...)
			waitSubscribed(t, api, own, 1)

			apiPost(t, api, "subscribe", `{"user":"`+user+`","channel":"`+feed+`"}`)
			apiPost(t, api, "publish", `{"channel":"`+feed+`","data":{"n":1}}`)
			apiPost(t, api, "send", `{"user":"`+user+`","data":{"k":"v"}}`)
			apiPost(t, api, "send", `{"user":"`+user+`","b64data":"AAEC/w=="}`)
			apiPost(t, api, "unsubscribe", `{"user":"`+user+`","channel":"`+feed+`","reason":"bye"}`)
			apiPost(t, api, "unsubscribe", `{"user":"`+user+`","channel":"`+own+`","code":2500,"reason":"again"}`)
			want := []string{
				`{"subscribed":"` + feed + `","recoverable":true,"epoch":"*","offset":0}`,
				`{"channel":"` + feed + `","offset":1,"epoch":"*","data":{"n":1}}`,
				`{"message":{"k":"v"}}`,
				`{"message":"AAEC/w==","b64":true}`,
				`{"unsubscribed":"` + feed + `","code":2000,"reason":"bye"}`,
				`{"unsubscribed":"` + own + `","code":2500,"reason":"again","resubscribe":true}`,
			}
			for i, w := range want {
				if got := sub.line(t); !matchLine(got, w) {
					t.Fatalf("line %d: %s\nwant %s", i+1, got, w)
				}
			}
			// The own channel was subscribed again: its publications go on.
			apiPost(t, api, "publish", `{"channel":"`+own+`","data":"after"}`)
			if got, w := sub.line(t), `{"channel":"`+own+`","offset":1,"epoch":"*","data":"after"}`; !matchLine(got, w) {
				t.Fatalf("after the resubscribe: %s\nwant %s", got, w)
			}
		})
	}
}

// matchLine compares a JSON line with want, where the epoch "*" stands
// for any non-empty epoch.
func matchLine(got, want string) bool {
	var g map[string]any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		return false
	}
	if e, ok := g["epoch"].(string); ok && e != "" && strings.Contains(want, `"epoch":"*"`) {
		g["epoch"] = "*"
	}
	b, _ := json.Marshal(g)
	var w map[string]any
	_ = json.Unmarshal([]byte(want), &w)
	bw, _ := json.Marshal(w)
	return string(b) == string(bw)
}

// TestSubEvents: herald sub with an API key follows the lifecycle events
// channel: a user's connect makes an online event line.
func TestSubEvents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := dir + "/herald.yaml"
	if err := os.WriteFile(cfg, []byte("events:\n  enabled: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr := serve(t, []string{"HERALD_API_KEY=k"}, "--dev", "--token-secret", "s3cret", "--config", cfg)
	url := "ws://" + addr + "/ws"
	sub := start(t, nil, "sub", "--url", url, "--key", "k", "$events")
	tok, err := run(t, nil, "token", "--secret", "s3cret", "--user", "eve", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	// A second subscriber, as user eve: its connect comes online.
	start(t, nil, "sub", "--url", url, "--token", strings.TrimSpace(tok), "room:1")
	for {
		var line struct {
			Channel string `json:"channel"`
			Data    struct {
				Type string `json:"type"`
				User string `json:"user"`
				ID   string `json:"id"`
			} `json:"data"`
		}
		got := sub.line(t)
		if err := json.Unmarshal([]byte(got), &line); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if line.Channel == "$events" && line.Data.Type == "online" && line.Data.User == "eve" && line.Data.ID != "" {
			return
		}
	}
}

// TestSubSSE: herald sub --transport sse prints a channel's publications
// like the other transports and, after the server ends its stream,
// reconnects with the last event id and prints what it missed, once.
func TestSubSSE(t *testing.T) {
	t.Parallel()
	_, addr := serve(t, []string{"HERALD_API_KEY=k"}, "--dev", "--token-secret", "s3cret")
	url, api := "ws://"+addr+"/ws", "http://"+addr
	tok, err := run(t, nil, "token", "--secret", "s3cret", "--user", "sse-user", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	sub := start(t, nil, "sub", "--transport", "sse", "--url", url, "--token", strings.TrimSpace(tok), "feed-sse")
	waitSubscribed(t, api, "feed-sse", 1)
	apiPost(t, api, "publish", `{"channel":"feed-sse","data":{"n":1}}`)
	if got, w := sub.line(t), `{"channel":"feed-sse","offset":1,"epoch":"*","data":{"n":1}}`; !matchLine(got, w) {
		t.Fatalf("%s\nwant %s", got, w)
	}
	apiPost(t, api, "disconnect", `{"user":"sse-user","code":3007,"reason":"test"}`)
	apiPost(t, api, "publish", `{"channel":"feed-sse","data":{"n":2}}`)
	apiPost(t, api, "publish", `{"channel":"feed-sse","data":{"n":3}}`)
	for i := 2; i <= 3; i++ {
		w := `{"channel":"feed-sse","offset":` + string(rune('0'+i)) + `,"epoch":"*","data":{"n":` + string(rune('0'+i)) + `}}`
		if got := sub.line(t); !matchLine(got, w) {
			t.Fatalf("after the reconnect: %s\nwant %s", got, w)
		}
	}
}
