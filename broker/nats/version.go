package nats

import (
	"fmt"
	"strconv"
	"strings"
)

// minReplicatedVersion is the oldest nats-server whose replicated streams
// honour a conditional append (Nats-Expected-Last-Subject-Sequence) when
// two arrive at once. Older servers checked the condition on the leader
// before proposing, not as part of the replicated write, so both could be
// stored (nats-server#4320; for an expected sequence of 0, #5794): two
// publications with one offset, which Herald's chaos suite observed with
// nats-server 2.9.10. Herald's offsets and idempotency claims rest on
// that condition.
var minReplicatedVersion = [3]int{2, 10, 20}

// checkServerVersion refuses a server older than minReplicatedVersion
// when streams are replicated (replicas above 1). An unparsable version
// is let through: it is not a release we know to be affected.
func checkServerVersion(version string, replicas int) error {
	if replicas <= 1 {
		return nil
	}
	v, ok := parseVersion(version)
	if !ok {
		return nil
	}
	for i := range v {
		if v[i] != minReplicatedVersion[i] {
			if v[i] > minReplicatedVersion[i] {
				return nil
			}
			return fmt.Errorf("herald: nats: replicas %d needs nats-server %d.%d.%d or later, the server is %s: older servers can store two conditional appends at once in a replicated stream (nats-server#4320, #5794), giving two publications the same offset",
				replicas, minReplicatedVersion[0], minReplicatedVersion[1], minReplicatedVersion[2], version)
		}
	}
	return nil
}

// parseVersion reads "MAJOR.MINOR.PATCH", with an optional "v" before
// and a pre-release or build suffix after.
func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, false
		}
		v[i] = n
	}
	return v, true
}
