// Package broker defines the seams where Herald's shared state plugs in: a
// Broker carries publications between nodes and keeps channel history and
// stream positions; a PresenceStore keeps who is in which channel.
//
// Implementations: broker/memory (single node, the default), broker/nats and
// broker/redis. Every implementation must pass broker/brokertest.
package broker
