package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/client"
)

func runPub(args []string) error {
	fs := flag.NewFlagSet("pub", flag.ExitOnError)
	url := fs.String("url", envOr("HERALD_URL", defaultURL), "server WebSocket URL (client publish)")
	tok := fs.String("token", os.Getenv("HERALD_TOKEN"), "connection token (client publish)")
	api := fs.String("api", os.Getenv("HERALD_API"), "server base URL, e.g. http://localhost:8000: publish through the HTTP API")
	key := fs.String("key", os.Getenv("HERALD_API_KEY"), "API key (with --api)")
	idem := fs.String("idempotency-key", "", "idempotency key")
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		return errors.New("usage: herald pub [--url URL | --api URL --key K] CHANNEL DATA")
	}
	ch, data := fs.Arg(0), fs.Arg(1)
	if data == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return err
		}
		data = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if *api != "" {
		return apiPublish(ctx, *api, *key, ch, data, *idem)
	}
	c, err := client.Dial(ctx, *url, &client.Options{Token: *tok, Name: "herald-cli"})
	if err != nil {
		return terminal(err)
	}
	defer c.Close()
	pos, err := c.Publish(ctx, ch, []byte(data), &client.PublishOptions{IdempotencyKey: *idem})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(pos)
}

func apiPublish(ctx context.Context, base, key, ch, data, idem string) error {
	body := map[string]any{"channel": ch, "idempotency_key": idem}
	if json.Valid([]byte(data)) {
		body["data"] = json.RawMessage(data)
	} else {
		body["data"] = data // plain text goes as a JSON string
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(base, "/")+"/api/publish", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "apikey "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(out))
	}
	_, err = os.Stdout.Write(out)
	return err
}

func runToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	secret := fs.String("secret", os.Getenv("HERALD_TOKEN_SECRET"), "HS256 secret (the server's --token-secret)")
	user := fs.String("user", "", "user id (sub claim)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime (0: no expiry)")
	info := fs.String("info", "", "info claim (JSON), shown in presence")
	channels := fs.String("channels", "", "comma-separated channels to subscribe server-side")
	client := fs.String("client", "", "subscription token: the client id it is for")
	channel := fs.String("channel", "", "subscription token: the channel it grants")
	_ = fs.Parse(args)
	if *secret == "" || (*user == "" && *channel == "") {
		return errors.New("usage: herald token --secret S --user U [--ttl D] [--info JSON] [--channels a,b]")
	}
	o := auth.MintOptions{User: *user, TTL: *ttl, Client: *client, Channel: *channel}
	if *info != "" {
		if !json.Valid([]byte(*info)) {
			return errors.New("--info must be JSON")
		}
		o.Info = json.RawMessage(*info)
	}
	if *channels != "" {
		o.Channels = strings.Split(*channels, ",")
	}
	tok, err := auth.MintHS256(*secret, o)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
