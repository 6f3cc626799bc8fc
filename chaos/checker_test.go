package chaos

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// violation is a broken promise found in a history.
type violation struct {
	T      int64
	Kind   string
	Stream *stream // nil if about no one stream
	Index  int     // the event of Stream, or -1
	Msg    string
}

func (v violation) String() string {
	who := ""
	if v.Stream != nil {
		who = " " + v.Stream.Name + " in " + v.Stream.Channel
		if v.Index >= 0 {
			who += fmt.Sprintf(" event %d", v.Index)
		}
	}
	return fmt.Sprintf("%v [%s]%s: %s", time.Duration(v.T).Round(time.Millisecond), v.Kind, who, v.Msg)
}

// checkStats count what the checker went through.
type checkStats struct {
	Publications int // acknowledged
	Unacked      int // never acknowledged (may or may not have landed)
	Deliveries   int // publications handed to applications, each checked
	Gaps         int // signalled: recovered:false, epoch change, gap marker
	Linearizable string
}

// gapSignal is a signalled jump of a stream from one position to another.
type gapSignal struct {
	T        int64
	From, To pos
}

// check reads a whole history against the guarantees and returns what it
// counted and every violation, earliest first.
func check(h *history) (checkStats, []violation) {
	var (
		st   checkStats
		vs   []violation
		byAt = map[pos]string{} // position -> the publication delivered there
		atBy = map[string]map[string]uint64{}
	)
	bad := func(v violation) { vs = append(vs, v) }
	// Every position holds one publication, whoever saw it; and a
	// publication sits at one offset per epoch (idempotency).
	place := func(t int64, s *stream, i int, at pos, id, source string) {
		if prev, ok := byAt[at]; ok && prev != id {
			bad(violation{T: t, Kind: "position", Stream: s, Index: i,
				Msg: fmt.Sprintf("%s/%d holds %s for %s and %s elsewhere", at.Epoch, at.Offset, id, source, prev)})
			return
		}
		byAt[at] = id
		m := atBy[at.Epoch]
		if m == nil {
			m = map[string]uint64{}
			atBy[at.Epoch] = m
		}
		if o, ok := m[id]; ok && o != at.Offset {
			bad(violation{T: t, Kind: "idempotency", Stream: s, Index: i,
				Msg: fmt.Sprintf("%s is at offsets %d and %d of epoch %s: published twice", id, o, at.Offset, at.Epoch)})
			return
		}
		m[id] = at.Offset
	}

	gaps := map[*stream][]gapSignal{}
	delivered := map[*stream]map[pos]string{}
	visited := map[*stream]map[string]bool{}
	for _, s := range h.Streams {
		events := s.events()
		var (
			cur     pos
			started bool
			seen    = map[string]uint64{} // id -> offset, in cur.Epoch
			dl      = map[pos]string{}
			ep      = map[string]bool{}
		)
		delivered[s], visited[s] = dl, ep
		for i, e := range events {
			if e.Sub {
				switch {
				case !started:
					cur, started = e.Pos, true
				case !e.WasRecovering:
					bad(violation{T: e.T, Kind: "resubscribe", Stream: s, Index: i,
						Msg: fmt.Sprintf("resubscribed without recovering from %s/%d", cur.Epoch, cur.Offset)})
					cur = e.Pos
				case e.Recovered:
					if e.Pos.Epoch != cur.Epoch {
						bad(violation{T: e.T, Kind: "silent-epoch", Stream: s, Index: i,
							Msg: fmt.Sprintf("recovered:true into epoch %s from %s", e.Pos.Epoch, cur.Epoch)})
						cur = pos{Epoch: e.Pos.Epoch, Offset: cur.Offset}
					}
					if e.Pos.Offset < cur.Offset {
						bad(violation{T: e.T, Kind: "rewind", Stream: s, Index: i,
							Msg: fmt.Sprintf("recovered:true at %d, behind the %d delivered", e.Pos.Offset, cur.Offset)})
					}
					// The recovered publications follow, from cur.
				default:
					st.Gaps++
					gaps[s] = append(gaps[s], gapSignal{T: e.T, From: cur, To: e.Pos})
					cur = e.Pos
				}
				if cur.Epoch != "" && !ep[cur.Epoch] {
					ep[cur.Epoch] = true
					seen = map[string]uint64{}
				}
				continue
			}
			st.Deliveries++
			switch {
			case e.Gap:
				st.Gaps++
				gaps[s] = append(gaps[s], gapSignal{T: e.T, From: cur, To: pos{Epoch: cur.Epoch, Offset: e.Offset - 1}})
			case e.Offset <= cur.Offset:
				bad(violation{T: e.T, Kind: "order", Stream: s, Index: i,
					Msg: fmt.Sprintf("offset %d (%s) after %d in epoch %s: a duplicate or out of order", e.Offset, e.ID, cur.Offset, cur.Epoch)})
			case e.Offset > cur.Offset+1:
				bad(violation{T: e.T, Kind: "silent-gap", Stream: s, Index: i,
					Msg: fmt.Sprintf("offset %d (%s) after %d in epoch %s: offsets %d-%d missing and no gap signalled", e.Offset, e.ID, cur.Offset, cur.Epoch, cur.Offset+1, e.Offset-1)})
			}
			if o, ok := seen[e.ID]; ok {
				bad(violation{T: e.T, Kind: "duplicate", Stream: s, Index: i,
					Msg: fmt.Sprintf("%s handed to the application twice in epoch %s (offsets %d and %d)", e.ID, cur.Epoch, o, e.Offset)})
			}
			seen[e.ID] = e.Offset
			if e.Offset > cur.Offset {
				cur.Offset = e.Offset
			}
			at := pos{Epoch: cur.Epoch, Offset: e.Offset}
			dl[at] = e.ID
			place(e.T, s, i, at, e.ID, s.Name)
		}
	}
	for ch, f := range h.Final {
		for off, id := range f.Pubs {
			place(0, nil, -1, pos{Epoch: f.Pos.Epoch, Offset: off}, id, "the final history of "+ch)
		}
	}

	// Acknowledged publications: where the ack said, and delivered to
	// every stream subscribed before the publish was called that stayed,
	// unless the stream was told of a gap that covers it.
	for _, op := range h.Publishes {
		if !op.Acked {
			st.Unacked++
			continue
		}
		st.Publications++
		place(op.Return, nil, -1, op.Pos, op.ID, "the ack of "+op.ID)
		for _, s := range h.Streams {
			if s.Channel != op.Channel || !s.Live || s.Start >= op.Call {
				continue
			}
			if id, ok := delivered[s][op.Pos]; ok && id == op.ID {
				continue
			}
			if covered(gaps[s], visited[s], op) {
				continue
			}
			bad(violation{T: op.Return, Kind: "lost", Stream: s, Index: -1,
				Msg: fmt.Sprintf("%s acknowledged at %s/%d via %s was never delivered and no gap was signalled", op.ID, op.Pos.Epoch, op.Pos.Offset, op.Via)})
		}
	}

	lin, lvs := checkLinearizable(h, byAt)
	st.Linearizable = lin
	vs = append(vs, lvs...)

	h.mu.Lock()
	vs = append(vs, h.Extra...)
	h.mu.Unlock()
	sort.SliceStable(vs, func(i, j int) bool { return vs[i].T < vs[j].T })
	return st, vs
}

// covered reports whether one of a stream's gap signals covers op's
// position: a jump past it within its epoch, a jump out of its epoch from
// before it, a jump into its epoch past it, or, for an epoch the stream
// never saw, any jump after the publish was called.
func covered(gs []gapSignal, visited map[string]bool, op *publishOp) bool {
	at := op.Pos
	for _, g := range gs {
		switch {
		case g.From.Epoch == at.Epoch && g.From.Offset < at.Offset && (g.To.Epoch != at.Epoch || g.To.Offset >= at.Offset):
			return true
		case g.From.Epoch != at.Epoch && g.To.Epoch == at.Epoch && g.To.Offset >= at.Offset:
			return true
		case !visited[at.Epoch] && g.T > op.Call:
			return true
		}
	}
	return false
}

// appendInput is an operation on one channel's stream: an append of a
// publication, or a read of the position.
type appendInput struct {
	Read bool
	ID   string
}

// checkLinearizable checks with porcupine that offset assignment in each
// channel and epoch is a linearizable append: each acknowledged append
// takes the next offset, at a point between its call and its ack, and a
// read of the position returns the offset of the last append before it.
// A publish never acknowledged but seen somewhere (byAt) joins with an
// open end. An epoch whose offsets are not all accounted for (a broker
// lost data that nobody read) is checked more loosely: offsets only grow.
func checkLinearizable(h *history, byAt map[pos]string) (string, []violation) {
	type key struct{ ch, epoch string }
	seenAt := map[string]pos{}
	for at, id := range byAt {
		seenAt[id] = at
	}
	var end int64
	for _, op := range h.Publishes {
		end = max(end, op.Return, op.Call)
	}
	for _, r := range h.Reads {
		end = max(end, r.Return)
	}
	end++
	parts := map[key][]porcupine.Operation{}
	offsets := map[key]map[uint64]bool{}
	maxRead := map[key]uint64{}
	addOff := func(k key, o uint64) {
		if offsets[k] == nil {
			offsets[k] = map[uint64]bool{}
		}
		offsets[k][o] = true
	}
	for _, op := range h.Publishes {
		at, ret := op.Pos, op.Return
		if !op.Acked {
			var ok bool
			if at, ok = seenAt[op.ID]; !ok {
				continue // never landed, or landed unseen in a lost epoch
			}
			ret = end
		}
		k := key{op.Channel, at.Epoch}
		parts[k] = append(parts[k], porcupine.Operation{Input: appendInput{ID: op.ID}, Call: op.Call, Output: at.Offset, Return: ret})
		addOff(k, at.Offset)
	}
	for _, r := range h.Reads {
		if r.Pos.Epoch == "" {
			continue
		}
		k := key{r.Channel, r.Pos.Epoch}
		maxRead[k] = max(maxRead[k], r.Pos.Offset)
		parts[k] = append(parts[k], porcupine.Operation{Input: appendInput{Read: true}, Call: r.Call, Output: r.Pos.Offset, Return: r.Return})
	}
	var (
		vs      []violation
		unknown int
	)
	keys := make([]key, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].ch+keys[i].epoch < keys[j].ch+keys[j].epoch })
	for _, k := range keys {
		ops := parts[k]
		strict := true
		for o := uint64(1); o <= uint64(len(offsets[k])); o++ {
			if !offsets[k][o] {
				strict = false
			}
		}
		if len(offsets[k]) == 0 || maxRead[k] > uint64(len(offsets[k])) {
			strict = false
		}
		res, info := porcupine.CheckOperationsVerbose(appendModel(strict), ops, 30*time.Second)
		switch res {
		case porcupine.Unknown:
			unknown++
		case porcupine.Illegal:
			msg := fmt.Sprintf("offset assignment in %s epoch %s is not a linearizable append (%d operations, strict=%v)", k.ch, k.epoch, len(ops), strict)
			if parts := info.PartialLinearizationsOperations(); len(parts) > 0 && len(parts[0]) > 0 {
				longest := parts[0][0]
				for _, p := range parts[0] {
					if len(p) > len(longest) {
						longest = p
					}
				}
				var b strings.Builder
				from := max(0, len(longest)-5)
				for _, o := range longest[from:] {
					fmt.Fprintf(&b, "; %s", describeOp(o))
				}
				msg += "; the longest linearizable prefix ends" + b.String()
			}
			vs = append(vs, violation{T: firstCall(ops), Kind: "linearizability", Index: -1, Msg: msg})
		}
	}
	if unknown > 0 {
		return fmt.Sprintf("%d partitions, %d undecided within the time limit", len(keys), unknown), vs
	}
	return fmt.Sprintf("%d partitions checked", len(keys)), vs
}

func firstCall(ops []porcupine.Operation) int64 {
	t := ops[0].Call
	for _, o := range ops {
		t = min(t, o.Call)
	}
	return t
}

func describeOp(o porcupine.Operation) string {
	in := o.Input.(appendInput)
	what := "append " + in.ID
	if in.Read {
		what = "read"
	}
	return fmt.Sprintf("%s -> %d [%v, %v]", what, o.Output, time.Duration(o.Call).Round(time.Millisecond), time.Duration(o.Return).Round(time.Millisecond))
}

// appendModel: the state is the offset of the last append. Strictly, an
// append takes the next offset; loosely (offsets missing from the
// record), any later one.
func appendModel(strict bool) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return uint64(0) },
		Step: func(state, input, output any) (bool, any) {
			last, in, out := state.(uint64), input.(appendInput), output.(uint64)
			if in.Read {
				if strict {
					return out == last, last
				}
				return out >= last, out
			}
			if strict {
				return out == last+1, out
			}
			return out > last, out
		},
		DescribeOperation: func(input, output any) string {
			return describeOp(porcupine.Operation{Input: input, Output: output})
		},
	}
}
