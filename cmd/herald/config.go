package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald"
)

// fileConfig is the config file: the library's Config plus what only the
// binary handles.
type fileConfig struct {
	herald.Config `yaml:",inline"`
	// Dev turns on the development defaults (as --dev).
	Dev bool `yaml:"dev"`
	// MetricsListen serves /metrics on a separate address (and takes it
	// off the public listener).
	MetricsListen string `yaml:"metrics_listen"`
	// DebugListen serves /debug/pprof and /metrics on an address that must
	// stay private.
	DebugListen string `yaml:"debug_listen"`
	// TLSCert and TLSKey serve HTTPS and WSS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
	// BrokerSection chooses the broker (broker.go); Cluster is embedded
	// cluster mode (cluster.go).
	BrokerSection brokerConfig  `yaml:"broker"`
	Cluster       clusterConfig `yaml:"cluster,omitempty"`
	// AdminSection is the admin UI: the library's AdminConfig, copied into
	// Config.Admin by loadConfig, and where to serve it.
	AdminSection adminSection `yaml:"admin,omitempty"`
}

// adminSection is the config file's admin section.
type adminSection struct {
	herald.AdminConfig `yaml:",inline"`
	// Listen serves the admin UI on a separate address instead of under
	// /admin/ of the public listener.
	Listen string `yaml:"listen,omitempty"`
}

// checkAdmin refuses an admin listener without the admin UI.
func (fc *fileConfig) checkAdmin() error {
	if fc.AdminSection.Listen != "" && fc.Admin.Password == "" {
		return errors.New("admin.listen is set but admin.password is not: the admin UI is off without a password")
	}
	return nil
}

// envSections are the sections whose scalar keys have environment
// variables too: HERALD_<SECTION>_<KEY> (HERALD_ADMIN_PASSWORD).
var envSections = map[string]bool{"admin": true}

// loadConfig reads path (YAML, or JSON, which is YAML) if given, then
// applies HERALD_* environment variables.
func loadConfig(path string) (*fileConfig, error) {
	fc := &fileConfig{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		// An empty file is an empty config.
		if err := dec.Decode(fc); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := applyEnv(reflect.ValueOf(fc).Elem(), os.Getenv); err != nil {
		return nil, err
	}
	if k := os.Getenv("HERALD_API_KEY"); k != "" {
		fc.APIKeys = append(fc.APIKeys, k)
	}
	fc.Admin = fc.AdminSection.AdminConfig
	return fc, nil
}

// applyEnv sets every scalar field from HERALD_<YAML KEY IN UPPER CASE>,
// and those of envSections from HERALD_<SECTION>_<KEY>. Lists take
// comma-separated values; durations Go syntax ("30s").
func applyEnv(v reflect.Value, getenv func(string) string) error {
	return applyEnvPrefix(v, "HERALD_", getenv)
}

func applyEnvPrefix(v reflect.Value, prefix string, getenv func(string) string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")
		if tag[0] == "-" || !f.IsExported() {
			continue
		}
		if len(tag) > 1 && tag[1] == "inline" {
			if err := applyEnvPrefix(v.Field(i), prefix, getenv); err != nil {
				return err
			}
			continue
		}
		if f.Type.Kind() == reflect.Struct && envSections[tag[0]] && prefix == "HERALD_" {
			if err := applyEnvPrefix(v.Field(i), prefix+strings.ToUpper(tag[0])+"_", getenv); err != nil {
				return err
			}
			continue
		}
		name := prefix + strings.ToUpper(tag[0])
		val := getenv(name)
		if val == "" {
			continue
		}
		fv := v.Field(i)
		switch {
		case f.Type == reflect.TypeOf(time.Duration(0)):
			d, err := time.ParseDuration(val)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fv.SetInt(int64(d))
		case fv.Kind() == reflect.String:
			fv.SetString(val)
		case fv.Kind() == reflect.Bool:
			b, err := strconv.ParseBool(val)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fv.SetBool(b)
		case fv.Kind() == reflect.Int:
			n, err := strconv.Atoi(val)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fv.SetInt(int64(n))
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
			fv.Set(reflect.ValueOf(strings.Split(val, ",")))
		}
	}
	return nil
}

// applyDev sets the development defaults: anonymous clients, every channel
// open, history and presence on, deltas offered (and compression, when
// it is on), the admin UI on. It returns the API key,
// token secret and admin password it generated (empty if they were
// configured).
func applyDev(fc *fileConfig) (genKey, genSecret, genAdmin string) {
	c := &fc.Config
	c.AllowAnonymous = true
	c.UnknownNamespacesAsDefault = true
	c.Demo = true
	if len(c.AllowedOrigins) == 0 {
		c.AllowedOrigins = []string{"*"}
	}
	if len(c.APIKeys) == 0 {
		genKey = randomHex(16)
		c.APIKeys = []string{genKey}
	}
	if c.TokenSecret == "" && c.Token.HMACSecret == "" {
		genSecret = randomHex(16)
		c.TokenSecret = genSecret
	}
	if c.Admin.Password == "" {
		genAdmin = randomHex(16)
		c.Admin.Password = genAdmin
		fc.AdminSection.Password = genAdmin
	}
	// With compression on (HERALD_COMPRESSION or the file's), the dev
	// namespace compresses its publications too.
	dev := herald.Namespace{
		HistorySize: 1000, HistoryTTL: time.Hour, Presence: true, JoinLeave: true,
		AllowSubscribe: true, AllowAnonymousSubscribe: true, AllowPublish: true,
		Compression: c.Compression, Delta: true,
	}
	for i := range c.Namespaces {
		if c.Namespaces[i].Name == "" {
			return genKey, genSecret, genAdmin // the file's default namespace wins
		}
	}
	c.Namespaces = append(c.Namespaces, dev)
	return genKey, genSecret, genAdmin
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
