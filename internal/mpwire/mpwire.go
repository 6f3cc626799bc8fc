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
