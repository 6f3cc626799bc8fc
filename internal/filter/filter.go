// Package filter parses and evaluates subscription filters over a
// publication's tags (a map of string to string).
//
// Grammar (keywords are case-sensitive, lower case):
//
//	expr    = or
//	or      = and { ("or" | "||") and }
//	and     = unary { ("and" | "&&") unary }
//	unary   = ("not" | "!") unary | "(" expr ")" | compare
//	compare = name ( ("==" | "!=") value
//	               | ("<" | "<=" | ">" | ">=") number
//	               | "in" "(" value { "," value } ")"
//	               | "startswith" string )
//	value   = string | number
//	name    = letter or "_", then letters, digits, "_", "-", "."; or a string
//	string  = a double-quoted string with Go escapes
//	number  = a decimal number (optionally signed, with fraction or exponent)
//
// A comparison with a string compares the tag's value as text; one with a
// number parses the tag's value as a number (strconv.ParseFloat) and is
// false if the tag is missing or is not a number. A missing tag equals
// nothing: name == v is false and name != v true.
//
// Parse returns a Filter whose String is the normalized text: two filters
// with the same String match the same publications.
package filter

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Limits on a filter's text, so that a subscriber cannot make the server
// parse or evaluate something large.
const (
	MaxLen   = 1024 // bytes of text
	MaxDepth = 32   // nesting of parentheses and not
	MaxTerms = 64   // comparisons and in-list values in all
)

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("herald: bad filter")

// Filter is a parsed filter. It is immutable and safe for concurrent use.
type Filter struct {
	root node
	text string
}

// Match reports whether a publication with tags passes the filter.
func (f *Filter) Match(tags map[string]string) bool { return f.root.eval(tags) }

// String returns the normalized text of the filter.
func (f *Filter) String() string { return f.text }

// Parse parses a filter's text.
func Parse(s string) (*Filter, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrSyntax, MaxLen)
	}
	p := &parser{lex: lexer{src: s}}
	p.next()
	n, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.errorf("unexpected %s", p.tok)
	}
	var b strings.Builder
	n.write(&b)
	return &Filter{root: n, text: b.String()}, nil
}

// Nodes.

type node interface {
	eval(tags map[string]string) bool
	write(b *strings.Builder)
}

type andNode struct{ a, b node }
type orNode struct{ a, b node }
type notNode struct{ a node }

func (n *andNode) eval(t map[string]string) bool { return n.a.eval(t) && n.b.eval(t) }
func (n *orNode) eval(t map[string]string) bool  { return n.a.eval(t) || n.b.eval(t) }
func (n *notNode) eval(t map[string]string) bool { return !n.a.eval(t) }

func (n *andNode) write(b *strings.Builder) {
	b.WriteByte('(')
	n.a.write(b)
	b.WriteString(" and ")
	n.b.write(b)
	b.WriteByte(')')
}

func (n *orNode) write(b *strings.Builder) {
	b.WriteByte('(')
	n.a.write(b)
	b.WriteString(" or ")
	n.b.write(b)
	b.WriteByte(')')
}

func (n *notNode) write(b *strings.Builder) {
	b.WriteString("not ")
	n.a.write(b)
}

// eqNode: name == s (or !=, with neg).
type eqNode struct {
	name, val string
	neg       bool
}

func (n *eqNode) eval(t map[string]string) bool {
	v, ok := t[n.name]
	return (ok && v == n.val) != n.neg
}

func (n *eqNode) write(b *strings.Builder) {
	b.WriteString(strconv.Quote(n.name))
	if n.neg {
		b.WriteString(" != ")
	} else {
		b.WriteString(" == ")
	}
	b.WriteString(strconv.Quote(n.val))
}

type cmpOp uint8

const (
	opEq cmpOp = iota
	opNe
	opLt
	opLe
	opGt
	opGe
)

var opText = [...]string{"==", "!=", "<", "<=", ">", ">="}

// numNode compares the tag's value as a number.
type numNode struct {
	name string
	op   cmpOp
	val  float64
}

func (n *numNode) eval(t map[string]string) bool {
	s, ok := t[n.name]
	if !ok {
		return n.op == opNe
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) {
		return n.op == opNe
	}
	switch n.op {
	case opEq:
		return v == n.val
	case opNe:
		return v != n.val
	case opLt:
		return v < n.val
	case opLe:
		return v <= n.val
	case opGt:
		return v > n.val
	}
	return v >= n.val
}

func (n *numNode) write(b *strings.Builder) {
	b.WriteString(strconv.Quote(n.name))
	b.WriteByte(' ')
	b.WriteString(opText[n.op])
	b.WriteByte(' ')
	b.WriteString(strconv.FormatFloat(n.val, 'g', -1, 64))
}

// inNode: the tag's value is one of vals (as text) or, for the numbers in
// nums, equal to one as a number.
type inNode struct {
	name string
	vals []string
	nums []float64
}

func (n *inNode) eval(t map[string]string) bool {
	s, ok := t[n.name]
	if !ok {
		return false
	}
	for _, v := range n.vals {
		if v == s {
			return true
		}
	}
	if len(n.nums) > 0 {
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			for _, x := range n.nums {
				if v == x {
					return true
				}
			}
		}
	}
	return false
}

func (n *inNode) write(b *strings.Builder) {
	b.WriteString(strconv.Quote(n.name))
	b.WriteString(" in (")
	for i, v := range n.vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(v))
	}
	for i, v := range n.nums {
		if i > 0 || len(n.vals) > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	}
	b.WriteByte(')')
}

type prefixNode struct{ name, prefix string }

func (n *prefixNode) eval(t map[string]string) bool {
	v, ok := t[n.name]
	return ok && strings.HasPrefix(v, n.prefix)
}

func (n *prefixNode) write(b *strings.Builder) {
	b.WriteString(strconv.Quote(n.name))
	b.WriteString(" startswith ")
	b.WriteString(strconv.Quote(n.prefix))
}

// Parser.

type parser struct {
	lex   lexer
	tok   token
	terms int
	err   error
}

func (p *parser) next() {
	p.tok = p.lex.next()
}

func (p *parser) errorf(format string, args ...any) error {
	if p.tok.kind == tError {
		return fmt.Errorf("%w: at byte %d: %s", ErrSyntax, p.tok.pos, p.tok.text)
	}
	return fmt.Errorf("%w: at byte %d: %s", ErrSyntax, p.tok.pos, fmt.Sprintf(format, args...))
}

func (p *parser) term() error {
	p.terms++
	if p.terms > MaxTerms {
		return p.errorf("more than %d terms", MaxTerms)
	}
	return nil
}

func (p *parser) expr(depth int) (node, error) {
	if depth > MaxDepth {
		return nil, p.errorf("nested deeper than %d", MaxDepth)
	}
	a, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.tok.is(tWord, "or") || p.tok.is(tOp, "||") {
		p.next()
		b, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		a = &orNode{a, b}
	}
	return a, nil
}

func (p *parser) and(depth int) (node, error) {
	a, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for p.tok.is(tWord, "and") || p.tok.is(tOp, "&&") {
		p.next()
		b, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		a = &andNode{a, b}
	}
	return a, nil
}

func (p *parser) unary(depth int) (node, error) {
	if depth > MaxDepth {
		return nil, p.errorf("nested deeper than %d", MaxDepth)
	}
	switch {
	case p.tok.is(tWord, "not") || p.tok.is(tOp, "!"):
		p.next()
		a, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return &notNode{a}, nil
	case p.tok.is(tOp, "("):
		p.next()
		a, err := p.expr(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.tok.is(tOp, ")") {
			return nil, p.errorf("expected ), found %s", p.tok)
		}
		p.next()
		return a, nil
	}
	return p.compare()
}

func (p *parser) compare() (node, error) {
	var name string
	switch p.tok.kind {
	case tWord:
		if isKeyword(p.tok.text) {
			return nil, p.errorf("expected a tag name, found %s", p.tok)
		}
		name = p.tok.text
	case tString:
		name = p.tok.text
	default:
		return nil, p.errorf("expected a tag name, found %s", p.tok)
	}
	if err := p.term(); err != nil {
		return nil, err
	}
	p.next()
	op := p.tok
	p.next()
	switch {
	case op.is(tWord, "in"):
		return p.inList(name)
	case op.is(tWord, "startswith"):
		if p.tok.kind != tString {
			return nil, p.errorf("startswith takes a string, found %s", p.tok)
		}
		n := &prefixNode{name, p.tok.text}
		p.next()
		return n, nil
	case op.kind == tOp:
		var o cmpOp = 255
		for i, t := range opText {
			if op.text == t {
				o = cmpOp(i)
			}
		}
		if o == 255 {
			break
		}
		switch p.tok.kind {
		case tString:
			if o != opEq && o != opNe {
				return nil, p.errorf("%s takes a number, found %s", op.text, p.tok)
			}
			n := &eqNode{name: name, val: p.tok.text, neg: o == opNe}
			p.next()
			return n, nil
		case tNumber:
			v, err := parseNumber(p.tok.text)
			if err != nil {
				return nil, p.errorf("bad number %q", p.tok.text)
			}
			p.next()
			return &numNode{name: name, op: o, val: v}, nil
		}
		return nil, p.errorf("expected a string or a number, found %s", p.tok)
	}
	return nil, fmt.Errorf("%w: at byte %d: expected an operator after %q, found %s", ErrSyntax, op.pos, name, op)
}

func (p *parser) inList(name string) (node, error) {
	if !p.tok.is(tOp, "(") {
		return nil, p.errorf("in takes a list in parentheses, found %s", p.tok)
	}
	p.next()
	n := &inNode{name: name}
	for {
		if err := p.term(); err != nil {
			return nil, err
		}
		switch p.tok.kind {
		case tString:
			n.vals = append(n.vals, p.tok.text)
		case tNumber:
			v, err := parseNumber(p.tok.text)
			if err != nil {
				return nil, p.errorf("bad number %q", p.tok.text)
			}
			n.nums = append(n.nums, v)
		default:
			return nil, p.errorf("expected a string or a number, found %s", p.tok)
		}
		p.next()
		if p.tok.is(tOp, ")") {
			p.next()
			return n, nil
		}
		if !p.tok.is(tOp, ",") {
			return nil, p.errorf("expected , or ), found %s", p.tok)
		}
		p.next()
	}
}

func parseNumber(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, ErrSyntax
	}
	return v, nil
}

func isKeyword(s string) bool {
	switch s {
	case "and", "or", "not", "in", "startswith":
		return true
	}
	return false
}
