// Package web holds the pages Herald serves from its binary: the demo chat
// at / in development mode. The files are embedded with go:embed; there is
// no build step.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves the embedded pages.
func Handler() http.Handler {
	sub, _ := fs.Sub(static, "static")
	return http.FileServerFS(sub)
}
