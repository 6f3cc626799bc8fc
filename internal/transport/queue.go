package transport

import "sync"

// segSize is the number of frames in one queue segment.
const segSize = 32

type segment struct {
	items [segSize]item
	next  *segment
}

var segments = sync.Pool{New: func() any { return new(segment) }}

// queue is a FIFO of frames in pooled fixed-size segments: pushing and
// popping allocate nothing in steady state, and an empty queue holds no
// memory at all. It is not safe for concurrent use (Conn.mu guards it).
type queue struct {
	head, tail *segment
	hi, ti     uint16 // next item to pop in head; next free slot in tail
	n          int32  // a queue is bounded by Options.QueueMaxMessages
}

func (q *queue) len() int { return int(q.n) }

func (q *queue) push(it item) {
	if q.tail == nil || q.ti == segSize {
		s := segments.Get().(*segment)
		if q.tail == nil {
			q.head, q.hi = s, 0
		} else {
			q.tail.next = s
		}
		q.tail, q.ti = s, 0
	}
	q.tail.items[q.ti] = it
	q.ti++
	q.n++
}

// each calls f on the items from the front until it returns false.
func (q *queue) each(f func(it *item) bool) {
	s, i := q.head, q.hi
	for k := int32(0); k < q.n; k++ {
		if i == segSize {
			s, i = s.next, 0
		}
		if !f(&s.items[i]) {
			return
		}
		i++
	}
}

// front returns the first item; the queue must not be empty.
func (q *queue) front() *item {
	if q.hi == segSize {
		q.advance()
	}
	return &q.head.items[q.hi]
}

// pop removes the first item.
func (q *queue) pop() {
	if q.hi == segSize {
		q.advance()
	}
	q.head.items[q.hi] = item{}
	q.hi++
	q.n--
	if q.n == 0 {
		q.reset()
	}
}

// advance moves to the next segment, returning the spent one to the pool.
func (q *queue) advance() {
	old := q.head
	q.head, q.hi = old.next, 0
	old.next = nil
	segments.Put(old)
}

// reset empties the queue and returns its segments to the pool.
func (q *queue) reset() {
	for s := q.head; s != nil; {
		next := s.next
		s.items = [segSize]item{}
		s.next = nil
		segments.Put(s)
		s = next
	}
	*q = queue{}
}

// filter keeps the items for which keep is true, in order.
func (q *queue) filter(keep func(i int, it *item) bool) {
	var out queue
	i := 0
	q.each(func(it *item) bool {
		if keep(i, it) {
			out.push(*it)
		}
		i++
		return true
	})
	q.reset()
	*q = out
}
