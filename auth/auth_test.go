package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/auth"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jwksServer(t *testing.T, keys map[string]crypto.PublicKey) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	var set []map[string]string
	for kid, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			set = append(set, map[string]string{"kty": "RSA", "kid": kid, "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PublicKey:
			raw, _ := k.Bytes()
			set = append(set, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])})
		case ed25519.PublicKey:
			set = append(set, map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k)})
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": set})
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestJWKS(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, dk, _ := ed25519.GenerateKey(rand.Reader)
	srv, hits := jwksServer(t, map[string]crypto.PublicKey{"r1": &rk.PublicKey, "e1": &ek.PublicKey, "d1": dk.Public()})
	evil, evilHits := jwksServer(t, nil)
	v, err := auth.NewVerifier(auth.VerifierConfig{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for kid, key := range map[string]crypto.Signer{"r1": rk, "e1": ek, "d1": dk} {
		tok, err := auth.Mint(key, kid, auth.MintOptions{User: "u-" + kid, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(ctx, tok)
		if err != nil || c.Subject != "u-"+kid {
			t.Fatalf("kid %s: %v", kid, err)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times for three known kids", n)
	}
	// A key of the wrong kind for the algorithm is refused.
	tok, _ := auth.Mint(ek, "r1", auth.MintOptions{User: "x"})
	if _, err := v.Verify(ctx, tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("ES256 token with an RSA kid: %v", err)
	}
	// Unknown kids refetch at most every 10s: a flood costs one fetch.
	for i := 0; i < 20; i++ {
		tok, _ := auth.Mint(rk, "unknown", auth.MintOptions{User: "x"})
		if _, err := v.Verify(ctx, tok); err == nil {
			t.Fatal("unknown kid accepted")
		}
	}
	if n := hits.Load(); n > 2 {
		t.Fatalf("%d JWKS fetches after an unknown-kid flood", n)
	}
	// jku and x5u in the header are ignored: the URL is the configured one.
	tk := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "x"})
	tk.Header["kid"] = "r1"
	tk.Header["jku"] = evil.URL
	tk.Header["x5u"] = evil.URL
	s, _ := tk.SignedString(rk)
	if _, err := v.Verify(ctx, s); err != nil {
		t.Fatal(err)
	}
	if evilHits.Load() != 0 {
		t.Fatal("verifier fetched a URL named in the token")
	}
	// HS256 is not enabled with only a JWKS.
	hs, _ := auth.MintHS256("whatever", auth.MintOptions{User: "x"})
	if _, err := v.Verify(ctx, hs); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("HS256 accepted without a secret: %v", err)
	}
}

func TestAlgorithmsAndClaims(t *testing.T) {
	v, err := auth.NewVerifier(auth.VerifierConfig{HMACSecret: "s", Audience: "a", Issuer: "i", Leeway: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok, _ := auth.MintHS256("s", auth.MintOptions{User: "u", TTL: time.Minute, Audience: "a", Issuer: "i",
		Info: json.RawMessage(`{"name":"U"}`), Channels: []string{"a", "b"}})
	c, err := v.Verify(ctx, ok)
	if err != nil || c.Subject != "u" || string(c.Info) != `{"name":"U"}` || len(c.Channels) != 2 {
		t.Fatalf("valid token: %+v %v", c, err)
	}
	expired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "aud": "a", "iss": "i", "exp": time.Now().Add(-time.Minute).Unix()}).SignedString([]byte("s"))
	if _, err := v.Verify(ctx, expired); !errors.Is(err, auth.ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rs, _ := auth.Mint(rk, "", auth.MintOptions{User: "u", Audience: "a", Issuer: "i"})
	if _, err := v.Verify(ctx, rs); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("RS256 accepted with only HS256 enabled: %v", err)
	}
	if _, err := auth.NewVerifier(auth.VerifierConfig{RSAPublicKey: "not pem"}); err == nil {
		t.Fatal("bad PEM accepted")
	}
}

// FuzzVerify runs arbitrary tokens, and validly signed tokens with
// arbitrary claims, through the verifier: no panic, and an accepted token
// always carries a string subject.
func FuzzVerify(f *testing.F) {
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.x", []byte(`{"sub":"u","exp":9999999999}`))
	f.Add("a.b.c", []byte(`{"sub":1,"aud":[1,2],"info":{"x":[]}}`))
	f.Add("", []byte(`{"channels":"notalist","exp":"soon"}`))
	v, _ := auth.NewVerifier(auth.VerifierConfig{HMACSecret: "fuzz"})
	f.Fuzz(func(t *testing.T, token string, claims []byte) {
		_, _ = v.Verify(context.Background(), token)
		h := b64([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64(claims)
		mac := hmac.New(sha256.New, []byte("fuzz"))
		mac.Write([]byte(h))
		signed := h + "." + b64(mac.Sum(nil))
		c, err := v.Verify(context.Background(), signed)
		if err == nil && c == nil {
			t.Fatal("nil claims without error")
		}
	})
}
