package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testaddr"
)

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(t.TempDir(), "ca.pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue returns the files of a certificate for 127.0.0.1, good for both
// ends of a route.
func (ca *testCA) issue(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEmbeddedClusterTLS: three nodes with certificates of one CA form a
// cluster over TLS routes; a node whose certificate another CA signed is
// kept out (its routes fail the handshake), so it finds no majority.
func TestEmbeddedClusterTLS(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t, "herald cluster CA"), newTestCA(t, "another CA")
	addrs := testaddr.Addrs(t, 4)
	cfg := func(i int, ca *testCA) clusterConfig {
		cert, key := ca.issue(t, "node")
		return clusterConfig{Listen: addrs[i], Peers: addrs[:3], DataDir: t.TempDir(),
			TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: ca.file}
	}
	var cfgs []clusterConfig
	for i := 0; i < 3; i++ {
		c := cfg(i, ca)
		if err := c.validate(); err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	embs := startEmbeddedAll(t, cfgs)
	for _, e := range embs {
		if e.metaLeader() == "" {
			t.Fatal("no meta leader")
		}
		if n := e.srv.NumRoutes(); n == 0 {
			t.Fatalf("%d routes", n)
		}
	}

	// The stranger lists the three as its peers; every route it makes or
	// receives fails verification, so it never sees a leader.
	c := cfg(3, other)
	c.Peers = addrs
	_, err := startEmbedded(c.withDefaults(), time.Now().Add(3*time.Second), quietLog())
	if err == nil || !strings.Contains(err.Error(), "no JetStream cluster leader") {
		t.Fatalf("a node with another CA's certificate: %v", err)
	}
}

// TestClusterTLSConfig: the three files go together and must load.
func TestClusterTLSConfig(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ca")
	cert, key := ca.issue(t, "node")
	base := clusterConfig{Listen: "127.0.0.1:7001", Peers: []string{"127.0.0.1:7002"}}
	for _, tc := range []struct {
		name            string
		cert, key, cafl string
		err             string
	}{
		{"all three", cert, key, ca.file, ""},
		{"no CA", cert, key, "", "go together"},
		{"no key", cert, "", ca.file, "go together"},
		{"missing file", cert, key, filepath.Join(t.TempDir(), "none.pem"), "no such file"},
		{"CA not PEM", cert, key, key, "no PEM certificate"},
	} {
		c := base
		c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = tc.cert, tc.key, tc.cafl
		err := c.validate()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}
