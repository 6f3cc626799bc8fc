package filter

import (
	"strconv"
	"strings"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tError
	tWord
	tString
	tNumber
	tOp
)

type token struct {
	kind tokKind
	text string // the word, the unquoted string, the number, the operator, or the error
	pos  int
}

func (t token) is(k tokKind, text string) bool { return t.kind == k && t.text == text }

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of filter"
	case tString:
		return strconv.Quote(t.text)
	}
	return strconv.Quote(t.text)
}

type lexer struct {
	src string
	pos int
}

func (l *lexer) next() token {
	for l.pos < len(l.src) && strings.IndexByte(" \t\r\n", l.src[l.pos]) >= 0 {
		l.pos++
	}
	start := l.pos
	if l.pos >= len(l.src) {
		return token{kind: tEOF, pos: start}
	}
	c := l.src[l.pos]
	switch {
	case c == '"':
		return l.str()
	case c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9'):
		l.pos++
		for l.pos < len(l.src) && isNumByte(l.src[l.pos], l.src[l.pos-1]) {
			l.pos++
		}
		return token{kind: tNumber, text: l.src[start:l.pos], pos: start}
	case c == '_' || isLetter(c):
		l.pos++
		for l.pos < len(l.src) {
			c := l.src[l.pos]
			if c != '_' && c != '-' && c != '.' && !isLetter(c) && !(c >= '0' && c <= '9') {
				break
			}
			l.pos++
		}
		return token{kind: tWord, text: l.src[start:l.pos], pos: start}
	}
	for _, op := range []string{"==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", ","} {
		if strings.HasPrefix(l.src[l.pos:], op) {
			l.pos += len(op)
			return token{kind: tOp, text: op, pos: start}
		}
	}
	l.pos = len(l.src)
	return token{kind: tError, text: "unexpected character " + strconv.QuoteRune(rune(c)), pos: start}
}

func (l *lexer) str() token {
	start := l.pos
	l.pos++
	for l.pos < len(l.src) {
		switch l.src[l.pos] {
		case '\\':
			l.pos += 2
			continue
		case '"':
			l.pos++
			s, err := strconv.Unquote(l.src[start:l.pos])
			if err != nil {
				l.pos = len(l.src)
				return token{kind: tError, text: "bad string", pos: start}
			}
			return token{kind: tString, text: s, pos: start}
		}
		l.pos++
	}
	l.pos = len(l.src)
	return token{kind: tError, text: "unterminated string", pos: start}
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isNumByte(c, prev byte) bool {
	switch {
	case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E':
		return true
	case c == '-' || c == '+':
		return prev == 'e' || prev == 'E'
	}
	return false
}
