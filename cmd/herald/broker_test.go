package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseBrokerURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want brokerConfig
		err  string
	}{
		{in: "memory", want: brokerConfig{Type: "memory"}},
		{in: "nats://127.0.0.1:4222", want: brokerConfig{Type: "nats", NATS: &natsFileConfig{Servers: []string{"nats://127.0.0.1:4222"}}}},
		{in: "nats://a,nats://b:5222,c", want: brokerConfig{Type: "nats", NATS: &natsFileConfig{Servers: []string{"nats://a:4222", "nats://b:5222", "nats://c:4222"}}}},
		{in: "nats://u:p%40ss@a:4222,b:4222?prefix=x-1&replicas=3&memory_storage=true", want: brokerConfig{Type: "nats", Prefix: "x-1",
			NATS: &natsFileConfig{Servers: []string{"nats://a:4222", "nats://b:4222"}, User: "u", Password: "p@ss", Replicas: 3, MemoryStorage: true}}},
		{in: "nats://s3cret@a", want: brokerConfig{Type: "nats", NATS: &natsFileConfig{Servers: []string{"nats://a:4222"}, Token: "s3cret"}}},
		{in: "tls://a:4443", want: brokerConfig{Type: "nats", NATS: &natsFileConfig{Servers: []string{"tls://a:4443"}}}},
		{in: "nats://[::1]:4222", want: brokerConfig{Type: "nats", NATS: &natsFileConfig{Servers: []string{"nats://[::1]:4222"}}}},
		{in: "redis://127.0.0.1:6379", want: brokerConfig{Type: "redis", Redis: &redisFileConfig{Addrs: []string{"127.0.0.1:6379"}}}},
		{in: "redis://h", want: brokerConfig{Type: "redis", Redis: &redisFileConfig{Addrs: []string{"h:6379"}}}},
		{in: "redis://:pw@h:1/3?prefix=p", want: brokerConfig{Type: "redis", Prefix: "p", Redis: &redisFileConfig{Addrs: []string{"h:1"}, Password: "pw", DB: 3}}},
		{in: "rediss://user:pw@h", want: brokerConfig{Type: "redis", Redis: &redisFileConfig{Addrs: []string{"h:6379"}, Username: "user", Password: "pw", TLS: true}}},
		{in: "redis+cluster://h1:1,h2:2", want: brokerConfig{Type: "redis", Redis: &redisFileConfig{Addrs: []string{"h1:1", "h2:2"}, Cluster: true, ShardedPubSub: true}}},
		{in: "rediss+cluster://h1:1,rediss+cluster://h2:2?sharded_pubsub=false", want: brokerConfig{Type: "redis", Redis: &redisFileConfig{Addrs: []string{"h1:1", "h2:2"}, Cluster: true, TLS: true}}},
		{in: "kafka://x", err: "unknown scheme"},
		{in: "127.0.0.1:4222", err: "want memory"},
		{in: "nats://a?replica=3", err: `unknown parameter "replica"`},
		{in: "nats://a?replicas=three", err: "replicas"},
		{in: "nats://a/path", err: "no path"},
		{in: "nats://a,redis://b", err: "mixed schemes"},
		{in: "nats://u:p@a,u:p@b", err: "credentials once"},
		{in: "redis://a,b", err: "redis+cluster"},
		{in: "redis+cluster://a/1", err: "no database"},
		{in: "redis://a/x", err: "database number"},
		{in: "nats://a,,b", err: "empty host"},
		{in: "redis://a?sharded_pubsub=maybe", err: "sharded_pubsub"},
	} {
		got, err := parseBrokerURL(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%s:\n got %s\nwant %s", c.in, dump(*got), dump(c.want))
		}
	}
}

func dump(b brokerConfig) string {
	out, _ := yaml.Marshal(b)
	return strings.ReplaceAll(string(out), "\n", "; ")
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://u:secret@a:4222,b":         "nats://u:<redacted>@a:4222,b",
		"nats://tok@a":                     "nats://<redacted>@a",
		"redis://:pw@h:1/2?prefix=x":       "redis://:<redacted>@h:1/2?prefix=x",
		"redis+cluster://u:p%3A@h1:1,h2:2": "redis+cluster://u:<redacted>@h1:1,h2:2",
		"redis://h:1":                      "redis://h:1",
		"memory":                           "memory",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveBackend(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	flagv := func(s string) *string { return &s }
	load := func(t *testing.T, y string) *fileConfig {
		t.Helper()
		fc := &fileConfig{}
		if err := yaml.Unmarshal([]byte(y), fc); err != nil {
			t.Fatal(err)
		}
		return fc
	}

	t.Run("default is memory", func(t *testing.T) {
		fc := load(t, "listen: :1\n")
		if err := fc.resolveBackend(backendFlags{}, env()); err != nil || fc.BrokerSection.Type != "memory" {
			t.Fatalf("%v %+v", err, fc.BrokerSection)
		}
	})
	t.Run("file sections and URL merge", func(t *testing.T) {
		fc := load(t, "broker:\n  prefix: filep\n  nats:\n    servers: [nats://old:1]\n    reconnect_wait: 100ms\n    tls_ca_file: ca.pem\n")
		// the env URL overrides the file's servers; the flag overrides env.
		err := fc.resolveBackend(backendFlags{broker: flagv("nats://new:2?prefix=flagp")}, env("HERALD_BROKER", "nats://env:3"))
		if err != nil {
			t.Fatal(err)
		}
		n := fc.BrokerSection.NATS
		if fc.BrokerSection.Type != "nats" || fc.BrokerSection.Prefix != "flagp" || !reflect.DeepEqual(n.Servers, []string{"nats://new:2"}) ||
			n.ReconnectWait != 100*time.Millisecond || n.TLSCAFile != "ca.pem" {
			t.Fatalf("%s", dump(fc.BrokerSection))
		}
	})
	t.Run("type from the file", func(t *testing.T) {
		fc := load(t, "broker:\n  type: redis\n  redis:\n    addrs: [r:1]\n    health_check_interval: 1s\n")
		if err := fc.resolveBackend(backendFlags{}, env()); err != nil {
			t.Fatal(err)
		}
		rc, err := fc.BrokerSection.redisConfig(nil)
		if err != nil || rc.Addrs[0] != "r:1" || rc.HealthCheckInterval != time.Second || rc.Prefix != "" {
			t.Fatalf("%v %+v", err, rc)
		}
	})
	t.Run("cluster mode", func(t *testing.T) {
		fc := load(t, "broker:\n  nats:\n    reconnect_wait: 1s\n")
		f := backendFlags{listen: flagv("127.0.0.1:7001"), peers: flagv("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")}
		if err := fc.resolveBackend(f, env("HERALD_DATA_DIR", "/d")); err != nil {
			t.Fatal(err)
		}
		c := fc.Cluster
		if fc.BrokerSection.Type != "nats" || c.DataDir != "/d" || c.size() != 3 || len(c.peerURLs()) != 2 {
			t.Fatalf("%+v %+v", fc.BrokerSection, c)
		}
		d := c.withDefaults()
		if d.Name != "herald" || !strings.HasSuffix(d.NodeName, "-7001") || !strings.Contains(d.DataDir, "/d") || d.StartupTimeout != time.Minute {
			t.Fatalf("defaults %+v", d)
		}
		c.Secret = "s"
		if u := c.peerURLs()[0].String(); u != "nats-route://herald:s@127.0.0.1:7002" {
			t.Fatalf("route URL %s", u)
		}
	})
	for _, c := range []struct {
		name, yaml string
		f          backendFlags
		env        []string
		err        string
	}{
		{"bad type", "broker:\n  type: kafka\n", backendFlags{}, nil, "kafka"},
		{"section of another type", "broker:\n  type: redis\n  nats:\n    servers: [a]\n", backendFlags{}, nil, "nats section"},
		{"flag switches type", "broker:\n  nats:\n    servers: [a]\n", backendFlags{broker: flagv("redis://x")}, nil, "nats section"},
		{"bad url in env", "", backendFlags{}, []string{"HERALD_BROKER", "nats://a?x=1"}, "unknown parameter"},
		{"nats validation", "broker:\n  type: nats\n  prefix: has.dot\n", backendFlags{}, nil, "Prefix"},
		{"redis validation", "broker:\n  type: redis\n  prefix: \"{x}\"\n", backendFlags{}, nil, "brace"},
		{"redis tls files", "broker:\n  type: redis\n  redis:\n    tls_ca_file: /nonexistent/ca.pem\n", backendFlags{}, nil, "nonexistent"},
		{"presence ttl over the nats max", "presence_ttl: 20m\nbroker:\n  type: nats\n", backendFlags{}, nil, "max_presence_ttl"},
		{"ack cursor ttl over the nats max", "namespaces:\n  - name: o\n    history_size: 10\n    ack: true\n    ack_cursor_ttl: 200h\nbroker:\n  type: nats\n", backendFlags{}, nil, "max_cursor_ttl"},
		{"idempotency over the nats max", "idempotency_window: 1h\nbroker:\n  type: nats\n  nats:\n    max_idempotency_window: 30m\n", backendFlags{}, nil, "max_idempotency_window"},
		{"cluster without peers", "", backendFlags{listen: flagv("127.0.0.1:7001")}, nil, "peers"},
		{"cluster with only itself", "", backendFlags{listen: flagv("127.0.0.1:7001"), peers: flagv("127.0.0.1:7001")}, nil, "peers"},
		{"cluster bad listen", "", backendFlags{listen: flagv("7001"), peers: flagv("a:1")}, nil, "listen"},
		{"cluster bad peer", "", backendFlags{listen: flagv(":7001"), peers: flagv("a:1,b")}, nil, "peer"},
		{"cluster with redis", "", backendFlags{listen: flagv(":7001"), peers: flagv("a:1"), broker: flagv("redis://x")}, nil, "redis"},
		{"cluster with servers", "", backendFlags{listen: flagv(":7001"), peers: flagv("a:1"), broker: flagv("nats://x")}, nil, "servers"},
		{"cluster replicas", "broker:\n  nats:\n    replicas: 3\n", backendFlags{listen: flagv(":7001"), peers: flagv("a:1")}, nil, "replicas"},
		{"cluster options without listen", "", backendFlags{peers: flagv("a:1")}, nil, "cluster.listen"},
		{"data dir without listen", "", backendFlags{}, []string{"HERALD_DATA_DIR", "/x"}, "cluster.listen"},
		{"cluster tls without listen", "", backendFlags{}, []string{"HERALD_CLUSTER_TLS_CA_FILE", "/x"}, "cluster.listen"},
		{"cluster tls cert alone", "", backendFlags{listen: flagv(":7001"), peers: flagv("a:1")}, []string{"HERALD_CLUSTER_TLS_CERT_FILE", "/x"}, "go together"},
		{"cluster tls files missing", "cluster:\n  tls_cert_file: /nonexistent/c.pem\n  tls_key_file: /nonexistent/k.pem\n  tls_ca_file: /nonexistent/ca.pem\n",
			backendFlags{listen: flagv(":7001"), peers: flagv("a:1")}, nil, "nonexistent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc := load(t, c.yaml)
			err := fc.resolveBackend(c.f, env(c.env...))
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v, want one containing %q", err, c.err)
			}
		})
	}
}

func TestRedactBackend(t *testing.T) {
	t.Parallel()
	fc := &fileConfig{}
	fc.BrokerSection = brokerConfig{Type: "nats", URL: "nats://u:pw@a", NATS: &natsFileConfig{User: "u", Password: "pw", Token: "t"}}
	fc.Cluster.Secret = "s"
	orig := fc.BrokerSection.NATS
	fc.redactBackend()
	out, _ := yaml.Marshal(fc)
	for _, secret := range []string{"pw", ": t\n", ": s\n"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("printed config holds %q:\n%s", secret, out)
		}
	}
	if orig.Password != "pw" {
		t.Error("redacted copy shares the section")
	}
}
