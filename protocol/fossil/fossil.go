package fossil

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrCorrupt wraps every error of Apply: the delta does not parse, does
// not fit its source, or its result fails the checksum.
var ErrCorrupt = errors.New("fossil: corrupt delta")

// digits are the 64 digits of the format's integers.
const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"

// digitValue maps a byte to its digit value, or -1.
var digitValue = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(digits); i++ {
		t[digits[i]] = int8(i)
	}
	return t
}()

// appendInt appends v in the format's base-64 notation.
func appendInt(dst []byte, v uint64) []byte {
	var buf [11]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&63]
		v >>= 6
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// Checksum is the format's checksum of b: the 32-bit sum of b read as
// big-endian 32-bit words, the last one padded with zero bytes.
func Checksum(b []byte) uint32 {
	var sum uint32
	n := len(b) &^ 3
	for i := 0; i < n; i += 4 {
		sum += uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
	}
	var last uint32
	for i, shift := n, 24; i < len(b); i, shift = i+1, shift-8 {
		last |= uint32(b[i]) << shift
	}
	return sum + last
}

// maxInt bounds the integers Apply reads: larger counts, offsets and
// lengths cannot fit in memory, and checksums are 32-bit.
const maxInt = 1 << 40

// Apply returns the target that delta makes of src. It fails with an
// error wrapping ErrCorrupt when delta is malformed, refers outside src,
// or yields a target whose length or checksum differs from what delta
// states. maxLen, when positive, bounds the target's length: a delta that
// states a longer one is refused before anything is allocated.
func Apply(src, delta []byte, maxLen int) ([]byte, error) {
	p := parser{b: delta}
	n, err := p.int()
	if err != nil {
		return nil, err
	}
	if !p.next('\n') {
		return nil, fmt.Errorf("%w: no newline after the length", ErrCorrupt)
	}
	if maxLen > 0 && n > uint64(maxLen) {
		return nil, fmt.Errorf("%w: target of %d bytes, more than %d", ErrCorrupt, n, maxLen)
	}
	// The target cannot be longer than what the commands can make; the
	// stated length alone does not size the allocation.
	out := make([]byte, 0, min(n, uint64(len(src)+len(delta))))
	for p.i < len(p.b) {
		cnt, err := p.int()
		if err != nil {
			return nil, err
		}
		if p.i >= len(p.b) {
			return nil, fmt.Errorf("%w: command without a letter", ErrCorrupt)
		}
		op := p.b[p.i]
		p.i++
		switch op {
		case '@':
			ofs, err := p.int()
			if err != nil {
				return nil, err
			}
			if !p.next(',') {
				return nil, fmt.Errorf("%w: copy without a comma", ErrCorrupt)
			}
			if ofs+cnt > uint64(len(src)) {
				return nil, fmt.Errorf("%w: copy of %d bytes at %d past the source's %d", ErrCorrupt, cnt, ofs, len(src))
			}
			if uint64(len(out))+cnt > n {
				return nil, fmt.Errorf("%w: copy past the target's length", ErrCorrupt)
			}
			out = append(out, src[ofs:ofs+cnt]...)
		case ':':
			if cnt > uint64(len(p.b)-p.i) {
				return nil, fmt.Errorf("%w: insert of %d bytes past the delta's end", ErrCorrupt, cnt)
			}
			if uint64(len(out))+cnt > n {
				return nil, fmt.Errorf("%w: insert past the target's length", ErrCorrupt)
			}
			out = append(out, p.b[p.i:p.i+int(cnt)]...)
			p.i += int(cnt)
		case ';':
			if p.i != len(p.b) {
				return nil, fmt.Errorf("%w: data after the checksum", ErrCorrupt)
			}
			if uint64(len(out)) != n {
				return nil, fmt.Errorf("%w: target of %d bytes, want %d", ErrCorrupt, len(out), n)
			}
			if uint64(Checksum(out)) != cnt {
				return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
			}
			return out, nil
		default:
			return nil, fmt.Errorf("%w: unknown command %q", ErrCorrupt, op)
		}
	}
	return nil, fmt.Errorf("%w: no checksum", ErrCorrupt)
}

type parser struct {
	b []byte
	i int
}

// int reads an integer of at least one digit.
func (p *parser) int() (uint64, error) {
	var v uint64
	start := p.i
	for p.i < len(p.b) {
		d := digitValue[p.b[p.i]]
		if d < 0 {
			break
		}
		v = v<<6 | uint64(d)
		if v > maxInt {
			return 0, fmt.Errorf("%w: integer too large", ErrCorrupt)
		}
		p.i++
	}
	if p.i == start {
		return 0, fmt.Errorf("%w: integer expected at byte %d", ErrCorrupt, start)
	}
	return v, nil
}

func (p *parser) next(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// blockSize is the length of the source blocks Create indexes and of the
// shortest match it looks for: a copy command costs a few bytes, so
// shorter matches are not worth finding.
const blockSize = 16

// maxChain bounds the source blocks Create compares per target position,
// so that a source of many equal blocks costs no more than a bounded scan.
const maxChain = 32

// Create returns a delta that turns src into dst. It indexes src in
// blocks of 16 bytes and scans dst with a rolling hash: a 16-byte window
// of dst that equals a block of src is extended both ways and copied;
// the bytes between copies are inserted. Its cost is linear in
// len(src)+len(dst).
func Create(src, dst []byte) []byte {
	out := make([]byte, 0, 16+len(dst)/8)
	out = appendInt(out, uint64(len(dst)))
	out = append(out, '\n')
	if len(dst) <= blockSize || len(src) < blockSize {
		return finish(out, dst, dst)
	}
	nb := len(src) / blockSize
	bits := uint(6)
	for 1<<bits < 2*nb {
		bits++
	}
	size := 1 << bits
	heads := make([]int32, size+nb) // heads, then the chain of each block
	for i := range heads[:size] {
		heads[i] = -1
	}
	chain := heads[size:]
	for b := 0; b < nb; b++ {
		k := slot(hashOf(src[b*blockSize:(b+1)*blockSize]), bits)
		chain[b] = heads[k]
		heads[k] = int32(b)
	}
	base := 0 // start of the bytes of dst not yet in the delta
	i := 0    // start of the window
	h := hashOf(dst[:blockSize])
	for {
		bestLen, bestSrc, bestDst := 0, 0, 0
		steps := 0
		for b := heads[slot(h, bits)]; b >= 0 && steps < maxChain; b = chain[b] {
			steps++
			s := int(b) * blockSize
			if !bytes.Equal(src[s:s+blockSize], dst[i:i+blockSize]) {
				continue
			}
			back := 0
			for s-back > 0 && i-back > base && src[s-back-1] == dst[i-back-1] {
				back++
			}
			fwd := blockSize
			for s+fwd < len(src) && i+fwd < len(dst) && src[s+fwd] == dst[i+fwd] {
				fwd++
			}
			if back+fwd > bestLen {
				bestLen, bestSrc, bestDst = back+fwd, s-back, i-back
			}
		}
		if bestLen > 0 {
			if bestDst > base {
				out = appendInsert(out, dst[base:bestDst])
			}
			out = appendInt(out, uint64(bestLen))
			out = append(out, '@')
			out = appendInt(out, uint64(bestSrc))
			out = append(out, ',')
			base = bestDst + bestLen
			i = base
			if i+blockSize > len(dst) {
				break
			}
			h = hashOf(dst[i : i+blockSize])
			continue
		}
		if i+blockSize >= len(dst) {
			break
		}
		h = roll(h, dst[i], dst[i+blockSize])
		i++
	}
	return finish(out, dst[base:], dst)
}

// finish appends the insert of rest (if any) and the checksum of dst.
func finish(out, rest, dst []byte) []byte {
	if len(rest) > 0 {
		out = appendInsert(out, rest)
	}
	out = appendInt(out, uint64(Checksum(dst)))
	return append(out, ';')
}

func appendInsert(out, b []byte) []byte {
	out = appendInt(out, uint64(len(b)))
	out = append(out, ':')
	return append(out, b...)
}

// The rolling hash of a window of blockSize bytes: the polynomial
// sum of c[k]*hashMul^(blockSize-1-k), modulo 2^32. The table is indexed
// by the high bits of its product with a large odd constant.
const hashMul = 0x01000193

// hashOut is hashMul^blockSize: roll's weight of the byte leaving.
var hashOut = func() uint32 {
	p := uint32(1)
	for i := 0; i < blockSize; i++ {
		p *= hashMul
	}
	return p
}()

func hashOf(b []byte) uint32 {
	var h uint32
	for _, c := range b[:blockSize] {
		h = h*hashMul + uint32(c)
	}
	return h
}

// roll moves the window one byte: out leaves, in enters.
func roll(h uint32, out, in byte) uint32 {
	return h*hashMul - uint32(out)*hashOut + uint32(in)
}

// slot is the table index of hash h in a table of 1<<bits entries.
func slot(h uint32, bits uint) uint32 { return (h * 0x9E3779B1) >> (32 - bits) }
