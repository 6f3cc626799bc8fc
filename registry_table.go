package herald

import "hash/maphash"

// sessionTable is a set of sessions found by client id: open addressing
// with linear probing in a slice of pointers, half full when it grows or
// shrinks and at most three quarters full (8 to 16 bytes a session), where a
// map[string]*session took about 50 bytes a session at 15,000 (the key's
// string header, the value, control bytes and the table's slack). A
// session's home slot comes from the hash of its id; removal shifts the
// run after it back, so that no tombstones build up. Not safe for
// concurrent use: a registry shard's mutex guards it.
type sessionTable struct {
	seed  maphash.Seed
	slots []*session
	n     int
}

// sessionTableMin is the smallest table that holds sessions.
const sessionTableMin = 8

func (t *sessionTable) hash(id string) uint64 { return maphash.String(t.seed, id) }

// home is the slot a hash starts probing at: its high 32 bits scaled to
// the table's length (any length, not only powers of two).
func (t *sessionTable) home(h uint64) int {
	return int((h >> 32) * uint64(len(t.slots)) >> 32)
}

func (t *sessionTable) next(i int) int {
	if i++; i == len(t.slots) {
		return 0
	}
	return i
}

// find returns the slot holding the session with id, or -1.
func (t *sessionTable) find(id string) int {
	if t.n == 0 {
		return -1
	}
	for i := t.home(t.hash(id)); ; i = t.next(i) {
		ss := t.slots[i]
		if ss == nil {
			return -1
		}
		if ss.id == id {
			return i
		}
	}
}

// get returns the session with id, or nil.
func (t *sessionTable) get(id string) *session {
	if i := t.find(id); i >= 0 {
		return t.slots[i]
	}
	return nil
}

// put adds ss, in place of a session with the same id if there is one.
func (t *sessionTable) put(ss *session) {
	if i := t.find(ss.id); i >= 0 {
		t.slots[i] = ss
		return
	}
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(max(sessionTableMin, (t.n+1)*2))
	}
	t.insert(ss)
	t.n++
}

// insert puts ss in the first free slot from its home. (There is one.)
func (t *sessionTable) insert(ss *session) {
	i := t.home(t.hash(ss.id))
	for t.slots[i] != nil {
		i = t.next(i)
	}
	t.slots[i] = ss
}

// remove removes ss if it is the session with its id, and reports
// whether it was.
func (t *sessionTable) remove(ss *session) bool {
	i := t.find(ss.id)
	if i < 0 || t.slots[i] != ss {
		return false
	}
	t.n--
	if t.n == 0 {
		t.slots = nil
		return true
	}
	if len(t.slots) > sessionTableMin && t.n*8 < len(t.slots) {
		// Under an eighth full: half full again.
		t.slots[i] = nil
		t.resize(max(sessionTableMin, t.n*2))
		return true
	}
	// Shift back each session of the run after i whose home is not in
	// (i, j]: it would not be found past the hole.
	for {
		t.slots[i] = nil
		j := i
		for {
			j = t.next(j)
			s := t.slots[j]
			if s == nil {
				return true
			}
			k := t.home(t.hash(s.id))
			if (i <= j && (k <= i || k > j)) || (i > j && k <= i && k > j) {
				t.slots[i] = s
				i = j
				break
			}
		}
	}
}

// resize moves the sessions to a table of n slots.
func (t *sessionTable) resize(n int) {
	old := t.slots
	t.slots = make([]*session, n)
	for _, ss := range old {
		if ss != nil {
			t.insert(ss)
		}
	}
}

// appendAll appends every session to out.
func (t *sessionTable) appendAll(out []*session) []*session {
	for _, ss := range t.slots {
		if ss != nil {
			out = append(out, ss)
		}
	}
	return out
}
