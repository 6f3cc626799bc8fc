package herald

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"
	"unsafe"

	"github.com/heraldhq/herald/internal/transport"
)

// TestAdminPasswordCompareConstantTime checks the password comparison by
// construction: passwordOK hashes the given password to a fixed length
// and compares with crypto/subtle, and nothing in it compares with ==,
// !=, bytes.Equal or strings functions, whose time depends on where the
// inputs first differ.
func TestAdminPasswordCompareConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "admin_auth.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var fn *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "passwordOK" {
			fn = fd
		}
	}
	if fn == nil {
		t.Fatal("passwordOK not found in admin_auth.go")
	}
	calls := map[string]bool{}
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
				if pkg, ok := sel.X.(*ast.Ident); ok {
					calls[pkg.Name+"."+sel.Sel.Name] = true
				}
			}
		case *ast.BinaryExpr:
			if (n.Op == token.EQL || n.Op == token.NEQ) && !isConstantTimeResult(n) {
				t.Errorf("%s: a comparison with %s in passwordOK", fset.Position(n.Pos()), n.Op)
			}
		}
		return true
	})
	for _, want := range []string{"sha256.Sum256", "subtle.ConstantTimeCompare"} {
		if !calls[want] {
			t.Errorf("passwordOK does not call %s", want)
		}
	}
	for c := range calls {
		switch c {
		case "sha256.Sum256", "subtle.ConstantTimeCompare":
		default:
			t.Errorf("passwordOK calls %s", c)
		}
	}
	k := deriveAdminKeysWith("right password", 1)
	if !k.passwordOK("right password") || k.passwordOK("right passwor") || k.passwordOK("right password ") || k.passwordOK("") {
		t.Error("passwordOK answers wrongly")
	}
}

// isConstantTimeResult reports whether a comparison is the check of
// subtle.ConstantTimeCompare's result (== 1).
func isConstantTimeResult(b *ast.BinaryExpr) bool {
	call, ok := b.X.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "ConstantTimeCompare"
}

// TestSessionSizeClass: a node holds a session, a connection and a
// subscription per subscribed connection; each must stay in its size
// class of the allocator (176, 176 and 64 bytes).
func TestSessionSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(session{}); n > 176 {
		t.Errorf("a session is %d bytes: past the 176-byte size class", n)
	}
	if n := unsafe.Sizeof(transport.Conn{}); n > 160 {
		t.Errorf("a connection is %d bytes: past the 160-byte size class", n)
	}
	if n := unsafe.Sizeof(subscription{}); n > 64 {
		t.Errorf("a subscription is %d bytes: past the 64-byte size class", n)
	}
}
