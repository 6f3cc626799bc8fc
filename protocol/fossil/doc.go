// Package fossil encodes and applies deltas in the Fossil delta format, the
// format of the Fossil SCM (www.fossil-scm.org, "Delta Encoding"), which
// Herald sends to subscribers that ask for delta compression.
//
// A delta turns a source into a target. It is text: the target's length
// as a base-64 integer and a newline, then commands, each an integer and
// a letter:
//
//	N@O,   copy N bytes of the source starting at offset O
//	N:...  insert the N bytes that follow
//	C;     end: C is the checksum of the target
//
// Integers are written most significant digit first with the 64 digits
// 0-9 A-Z _ a-z ~. The checksum is the 32-bit sum of the target read as
// big-endian 32-bit words, the last one padded with zero bytes.
//
// Create and Apply are safe for concurrent use. Apply checks every count
// and offset against its inputs and the checksum against the result: a
// corrupt delta, or one applied to the wrong source, is an error, never a
// wrong target.
package fossil
