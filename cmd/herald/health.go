package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// runHealth asks a node whether it is ready for traffic: it GETs /readyz
// and returns nil on 200, an error (exit status 1) otherwise. Container
// images have no curl; their HEALTHCHECK runs this.
func runHealth(args []string) error {
	fs := flag.NewFlagSet("health", flag.ExitOnError)
	url := fs.String("url", "", "readiness URL (default: /readyz at the listen address of --config and HERALD_LISTEN)")
	configPath := fs.String("config", "", "config file to take the listen address and TLS setting from")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	_ = fs.Parse(args)
	if fs.NArg() != 0 {
		return &exitError{2, errors.New("usage: herald health [--url URL | --config FILE] [--timeout D]")}
	}
	client := &http.Client{Timeout: *timeout}
	target := *url
	if target == "" {
		fc, err := loadConfig(*configPath)
		if err != nil {
			return err
		}
		target, err = readyURL(fc.WithDefaults().Listen, fc.TLSCert != "")
		if err != nil {
			return err
		}
		if fc.TLSCert != "" {
			// The probe goes to this node's own listener, by address: it
			// asks about readiness, not identity, and the certificate
			// names the public host.
			client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s answered %s", target, resp.Status)
	}
	fmt.Println("ready")
	return nil
}

// readyURL is the /readyz URL of a node listening on listen (host:port).
// A wildcard or empty host is probed on the loopback address.
func readyURL(listen string, useTLS bool) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/readyz", nil
}
