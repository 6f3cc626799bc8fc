// Package mpwire appends MessagePack headers by hand, for the brokers'
// encoders of their most common message (a publication of data alone),
// which write the same bytes as the msgpack library without reflection.
package mpwire

// AppendBinHeader appends the header of a bin of n bytes (bin 8, 16 or 32,
// the smallest that holds n).
func AppendBinHeader(b []byte, n int) []byte {
	switch {
	case n < 1<<8:
		return append(b, 0xc4, byte(n))
	case n < 1<<16:
		return append(b, 0xc5, byte(n>>8), byte(n))
	}
	return append(b, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// AppendStrHeader appends the header of a str of n bytes (fixstr, str 8,
// 16 or 32, the smallest that holds n).
func AppendStrHeader(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, 0xa0|byte(n))
	case n < 1<<8:
		return append(b, 0xd9, byte(n))
	case n < 1<<16:
		return append(b, 0xda, byte(n>>8), byte(n))
	}
	return append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// The readers below take the value at the start of b and return it with
// what follows it; ok is false when b does not start with a complete value
// of the kind they read in one of the forms they know (the caller then
// decodes with the msgpack library, which knows them all). What they
// accept, they read as the library does.

// ReadMapLen reads a map header (fixmap, map 16 or 32): the number of
// key-value pairs that follow.
func ReadMapLen(b []byte) (n int, rest []byte, ok bool) {
	if len(b) == 0 {
		return 0, b, false
	}
	switch c := b[0]; {
	case c&0xf0 == 0x80:
		return int(c & 0x0f), b[1:], true
	case c == 0xde && len(b) >= 3:
		return int(b[1])<<8 | int(b[2]), b[3:], true
	case c == 0xdf && len(b) >= 5:
		return int(uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])), b[5:], true
	}
	return 0, b, false
}

// ReadArrayLen reads an array header (fixarray, array 16 or 32): the
// number of values that follow.
func ReadArrayLen(b []byte) (n int, rest []byte, ok bool) {
	if len(b) == 0 {
		return 0, b, false
	}
	switch c := b[0]; {
	case c&0xf0 == 0x90:
		return int(c & 0x0f), b[1:], true
	case c == 0xdc && len(b) >= 3:
		return int(b[1])<<8 | int(b[2]), b[3:], true
	case c == 0xdd && len(b) >= 5:
		return int(uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])), b[5:], true
	}
	return 0, b, false
}

// readLen reads the length of a str or bin whose header is b[0], given
// the header bytes of its 8, 16 and 32-bit forms; fix is true if the
// first byte was a fixstr (whose length it holds).
func readLen(b []byte, c8, c16, c32 byte, fix bool) (n, hdr int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	switch c := b[0]; {
	case fix && c&0xe0 == 0xa0:
		return int(c & 0x1f), 1, true
	case c == c8 && len(b) >= 2:
		return int(b[1]), 2, true
	case c == c16 && len(b) >= 3:
		return int(b[1])<<8 | int(b[2]), 3, true
	case c == c32 && len(b) >= 5:
		return int(uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])), 5, true
	}
	return 0, 0, false
}

// ReadStr reads a str (fixstr, str 8, 16 or 32): its bytes, a slice of b.
func ReadStr(b []byte) (s, rest []byte, ok bool) {
	n, h, ok := readLen(b, 0xd9, 0xda, 0xdb, true)
	if !ok || len(b)-h < n {
		return nil, b, false
	}
	return b[h : h+n : h+n], b[h+n:], true
}

// ReadBin reads a bin (bin 8, 16 or 32): its bytes, a slice of b whose
// capacity ends with them (an append copies).
func ReadBin(b []byte) (v, rest []byte, ok bool) {
	n, h, ok := readLen(b, 0xc4, 0xc5, 0xc6, false)
	if !ok || len(b)-h < n {
		return nil, b, false
	}
	return b[h : h+n : h+n], b[h+n:], true
}

// ReadInt reads an integer (positive and negative fixint, uint and int of
// 8 to 64 bits) as an int64; a uint 64 above the int64 range wraps, as
// the library's decoding into an int64 does.
func ReadInt(b []byte) (v int64, rest []byte, ok bool) {
	if len(b) == 0 {
		return 0, b, false
	}
	c := b[0]
	switch {
	case c <= 0x7f:
		return int64(c), b[1:], true
	case c >= 0xe0:
		return int64(int8(c)), b[1:], true
	}
	var size int
	switch c {
	case 0xcc, 0xd0:
		size = 1
	case 0xcd, 0xd1:
		size = 2
	case 0xce, 0xd2:
		size = 4
	case 0xcf, 0xd3:
		size = 8
	default:
		return 0, b, false
	}
	if len(b) < 1+size {
		return 0, b, false
	}
	var u uint64
	for _, x := range b[1 : 1+size] {
		u = u<<8 | uint64(x)
	}
	if c >= 0xd0 { // signed: extend the sign of the size bytes read
		shift := 64 - 8*uint(size)
		return int64(u<<shift) >> shift, b[1+size:], true
	}
	return int64(u), b[1+size:], true
}
