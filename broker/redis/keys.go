package redis

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"hash/fnv"
	"strings"
)

// keys names everything the broker keeps for one channel. All of them
// share one Redis Cluster hash tag, so that they live in one slot and one
// Lua script may touch them all (and SPUBLISH to the channel's pub/sub
// name, which hashes the same way).
type keys struct {
	base string // prefix:{channel}
}

// keysFor returns the channel's keys. The channel itself is the hash tag
// when it can be one: not empty and without '}' (an empty tag, or one cut
// short by a '}' in the name, would hash each key differently). Other
// names use a hex hash as the tag and carry the name after it, so keys
// stay distinct per channel; "prefix:#{" cannot be confused with
// "prefix:{".
func keysFor(prefix, ch string) keys {
	if ch != "" && !strings.ContainsRune(ch, '}') {
		return keys{base: prefix + ":{" + ch + "}"}
	}
	h := fnv.New64a()
	h.Write([]byte(ch))
	return keys{base: prefix + ":#{" + hex.EncodeToString(h.Sum(nil)) + "}" + ch}
}

// meta is a hash: e epoch, s top offset, lt time of the last append (ms,
// Redis clock), ttl history TTL (ms) in force at the last publish.
func (k keys) meta() string { return k.base + ":m" }

// stream is the history: a Redis stream whose entry IDs are <offset>-0,
// fields t (append time, ms) and d (the encoded publication).
func (k keys) stream() string { return k.base + ":h" }

// pubsub is the channel's pub/sub (or shard channel) name.
func (k keys) pubsub() string { return k.base + ":p" }

// idem is the idempotency record of key: "epoch:offset" with PX window.
func (k keys) idem(key string) string { return k.base + ":i:" + key }

// Presence: a hash client -> encoded ClientInfo, a hash client -> user and
// a sorted set client -> expiry (ms, Redis clock).
func (k keys) presenceInfo() string  { return k.base + ":ph" }
func (k keys) presenceUsers() string { return k.base + ":pu" }
func (k keys) presenceExp() string   { return k.base + ":pz" }

// controlName is the pub/sub name of node-to-node control messages.
func controlName(prefix string) string { return prefix + ":ctl" }

// newEpoch returns a random stream epoch: 8 base32 characters, as the
// memory broker's.
func newEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return base32.StdEncoding.EncodeToString(b[:])
}
