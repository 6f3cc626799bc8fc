package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	// ErrInvalidToken: the token is malformed, badly signed, or its claims
	// are unacceptable.
	ErrInvalidToken = errors.New("herald: invalid token")
	// ErrTokenExpired: the token was valid but its exp has passed.
	ErrTokenExpired = errors.New("herald: token expired")
)

// Claims are the claims Herald reads from its tokens.
type Claims struct {
	jwt.RegisteredClaims
	// Info is attached to the client's presence and publications.
	Info json.RawMessage `json:"info,omitempty"`
	// Channels are subscribed server-side at connect.
	Channels []string `json:"channels,omitempty"`
	// Client and Channel bind a subscription token to one connection and
	// one channel.
	Client  string `json:"client,omitempty"`
	Channel string `json:"channel,omitempty"`
}

// VerifierConfig configures a Verifier. Each key enables its algorithm;
// algorithms without a key are refused, and so is "none".
type VerifierConfig struct {
	// HMACSecret verifies HS256 tokens.
	HMACSecret string `yaml:"hmac_secret" json:"hmac_secret"`
	// RSAPublicKey (PEM) verifies RS256 tokens.
	RSAPublicKey string `yaml:"rsa_public_key" json:"rsa_public_key"`
	// ECDSAPublicKey (PEM, P-256) verifies ES256 tokens.
	ECDSAPublicKey string `yaml:"ecdsa_public_key" json:"ecdsa_public_key"`
	// Ed25519PublicKey (PEM) verifies EdDSA tokens.
	Ed25519PublicKey string `yaml:"ed25519_public_key" json:"ed25519_public_key"`
	// JWKSURL is fetched for RS256, ES256 and EdDSA keys chosen by the
	// token's kid. The URL is fixed here; nothing in a token can change it.
	JWKSURL string `yaml:"jwks_url" json:"jwks_url"`
	// JWKSRefresh is how long fetched keys are kept. Default 5m. An unknown
	// kid triggers a refetch at most every 10s.
	JWKSRefresh time.Duration `yaml:"jwks_refresh" json:"jwks_refresh"`
	// Audience and Issuer, when set, must match the aud and iss claims.
	Audience string `yaml:"audience" json:"audience"`
	Issuer   string `yaml:"issuer" json:"issuer"`
	// Leeway tolerates clock skew on exp, nbf and iat. Default 0.
	Leeway time.Duration `yaml:"leeway" json:"leeway"`
	// HTTPClient fetches the JWKS; default a client with a 10s timeout.
	HTTPClient *http.Client `yaml:"-" json:"-"`
}

// Verifier checks tokens. Create it with NewVerifier; it is safe for
// concurrent use.
type Verifier struct {
	hmac   []byte
	rsa    *rsa.PublicKey
	ec     *ecdsa.PublicKey
	ed     ed25519.PublicKey
	jwks   *jwks
	parser *jwt.Parser
}

// NewVerifier returns a verifier for cfg, or an error if a key does not
// parse.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	v := &Verifier{hmac: []byte(cfg.HMACSecret)}
	var algs []string
	if cfg.HMACSecret != "" {
		algs = append(algs, "HS256")
	}
	if cfg.RSAPublicKey != "" {
		k, err := parsePublicKey(cfg.RSAPublicKey)
		rk, ok := k.(*rsa.PublicKey)
		if err != nil || !ok {
			return nil, fmt.Errorf("rsa_public_key: not an RSA public key in PEM (%v)", err)
		}
		v.rsa = rk
		algs = append(algs, "RS256")
	}
	if cfg.ECDSAPublicKey != "" {
		k, err := parsePublicKey(cfg.ECDSAPublicKey)
		ek, ok := k.(*ecdsa.PublicKey)
		if err != nil || !ok {
			return nil, fmt.Errorf("ecdsa_public_key: not an ECDSA public key in PEM (%v)", err)
		}
		v.ec = ek
		algs = append(algs, "ES256")
	}
	if cfg.Ed25519PublicKey != "" {
		k, err := parsePublicKey(cfg.Ed25519PublicKey)
		ek, ok := k.(ed25519.PublicKey)
		if err != nil || !ok {
			return nil, fmt.Errorf("ed25519_public_key: not an Ed25519 public key in PEM (%v)", err)
		}
		v.ed = ek
		algs = append(algs, "EdDSA")
	}
	if cfg.JWKSURL != "" {
		v.jwks = newJWKS(cfg.JWKSURL, cfg.JWKSRefresh, cfg.HTTPClient)
		algs = append(algs, "RS256", "ES256", "EdDSA")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(algs), jwt.WithLeeway(cfg.Leeway), jwt.WithIssuedAt()}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

func parsePublicKey(s string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKIXPublicKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PublicKey(block.Bytes); err == nil {
		return k, nil
	}
	if c, err := x509.ParseCertificate(block.Bytes); err == nil {
		return c.PublicKey, nil
	}
	return nil, errors.New("unsupported PEM block " + block.Type)
}

// Enabled reports whether any key is configured.
func (v *Verifier) Enabled() bool {
	return len(v.hmac) > 0 || v.rsa != nil || v.ec != nil || v.ed != nil || v.jwks != nil
}

// keyFor returns the key for the token's algorithm. The algorithm was
// already checked against the allow-list; each algorithm only ever gets
// its own kind of key, so an HS256 token can never be checked against a
// public key.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(v.hmac) == 0 {
			return nil, errors.New("HS256 not enabled")
		}
		return v.hmac, nil
	case *jwt.SigningMethodRSA:
		if v.rsa != nil && t.Header["kid"] == nil {
			return v.rsa, nil
		}
	case *jwt.SigningMethodECDSA:
		if v.ec != nil && t.Header["kid"] == nil {
			return v.ec, nil
		}
	case *jwt.SigningMethodEd25519:
		if v.ed != nil && t.Header["kid"] == nil {
			return v.ed, nil
		}
	default:
		return nil, fmt.Errorf("algorithm %v not allowed", t.Header["alg"])
	}
	if v.jwks == nil {
		// A kid with only a static key: use the static key.
		switch t.Method.(type) {
		case *jwt.SigningMethodRSA:
			if v.rsa != nil {
				return v.rsa, nil
			}
		case *jwt.SigningMethodECDSA:
			if v.ec != nil {
				return v.ec, nil
			}
		case *jwt.SigningMethodEd25519:
			if v.ed != nil {
				return v.ed, nil
			}
		}
		return nil, errors.New("no key for algorithm")
	}
	kid, _ := t.Header["kid"].(string)
	k, err := v.jwks.key(ctx, kid)
	if err != nil {
		return nil, err
	}
	// The JWKS key must suit the algorithm (no RSA key for ES256, ...).
	switch t.Method.(type) {
	case *jwt.SigningMethodRSA:
		if _, ok := k.(*rsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodECDSA:
		if _, ok := k.(*ecdsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodEd25519:
		if _, ok := k.(ed25519.PublicKey); ok {
			return k, nil
		}
	}
	return nil, errors.New("JWKS key type does not match the algorithm")
}

// Verify parses and checks a token.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if !v.Enabled() {
		return nil, fmt.Errorf("%w: no key configured", ErrInvalidToken)
	}
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: token longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) { return v.keyFor(ctx, t) })
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, ErrTokenExpired
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return &c, nil
}

// maxTokenLen bounds the work spent on a token.
const maxTokenLen = 16 << 10

// MintOptions describe a token to mint.
type MintOptions struct {
	User     string
	TTL      time.Duration // 0: no exp
	Info     json.RawMessage
	Channels []string
	Client   string // subscription tokens
	Channel  string // subscription tokens
	Audience string
	Issuer   string
}

func (o MintOptions) claims() Claims {
	now := time.Now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: o.User, IssuedAt: jwt.NewNumericDate(now), Issuer: o.Issuer},
		Info:             o.Info, Channels: o.Channels, Client: o.Client, Channel: o.Channel,
	}
	if o.Audience != "" {
		c.Audience = jwt.ClaimStrings{o.Audience}
	}
	if o.TTL > 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(o.TTL))
	}
	return c
}

// MintHS256 signs a token with an HS256 secret: for `herald token`, tests,
// and applications that mint tokens in Go.
func MintHS256(secret string, o MintOptions) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, o.claims()).SignedString([]byte(secret))
}

// Mint signs a token with a private key: *rsa.PrivateKey (RS256),
// *ecdsa.PrivateKey (ES256) or ed25519.PrivateKey (EdDSA). kid, if not
// empty, goes in the header for JWKS lookups.
func Mint(key crypto.Signer, kid string, o MintOptions) (string, error) {
	var m jwt.SigningMethod
	switch key.(type) {
	case *rsa.PrivateKey:
		m = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		m = jwt.SigningMethodES256
	case ed25519.PrivateKey:
		m = jwt.SigningMethodEdDSA
	default:
		return "", fmt.Errorf("unsupported key type %T", key)
	}
	t := jwt.NewWithClaims(m, o.claims())
	if kid != "" {
		t.Header["kid"] = kid
	}
	return t.SignedString(key)
}
