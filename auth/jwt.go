package auth

import (
	"encoding/json"
	"errors"
	"fmt"
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

// Verifier checks tokens. Create it with NewVerifier; it is safe for
// concurrent use.
type Verifier struct {
	hmac   []byte
	parser *jwt.Parser
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// HMACSecret verifies HS256 tokens.
	HMACSecret string
	// Leeway tolerates clock skew on exp, nbf and iat. Default 0.
	Leeway time.Duration
}

// NewVerifier returns a verifier for cfg.
func NewVerifier(cfg VerifierConfig) *Verifier {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"HS256"}),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithIssuedAt(),
	}
	return &Verifier{hmac: []byte(cfg.HMACSecret), parser: jwt.NewParser(opts...)}
}

// Verify parses and checks a token.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if len(v.hmac) == 0 {
		return nil, fmt.Errorf("%w: no key configured", ErrInvalidToken)
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, fmt.Errorf("unexpected algorithm %v", t.Header["alg"])
		}
		return v.hmac, nil
	})
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, ErrTokenExpired
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return &c, nil
}

// MintOptions describe a token to mint.
type MintOptions struct {
	User     string
	TTL      time.Duration // 0: no exp
	Info     json.RawMessage
	Channels []string
	Client   string // subscription tokens
	Channel  string // subscription tokens
}

// MintHS256 signs a token with an HS256 secret: for `herald token`, tests,
// and applications that mint tokens in Go.
func MintHS256(secret string, o MintOptions) (string, error) {
	now := time.Now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: o.User, IssuedAt: jwt.NewNumericDate(now)},
		Info:             o.Info, Channels: o.Channels, Client: o.Client, Channel: o.Channel,
	}
	if o.TTL > 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(o.TTL))
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}
