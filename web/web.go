// Package web holds the pages Herald serves from its binary: the demo chat
// at / in development mode, and the admin UI at /admin/. The files are
// embedded with go:embed; there is no build step.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

//go:embed admin
var admin embed.FS

// Handler serves the embedded demo pages.
func Handler() http.Handler {
	sub, _ := fs.Sub(static, "static")
	return http.FileServerFS(sub)
}

// ClientFS is the browser SDK (herald-client, built by `npm run
// build:web` in js/).
func ClientFS() fs.FS {
	sub, _ := fs.Sub(static, "static/herald-client")
	return sub
}

// AdminFS is the admin UI: its pages at the top, and assets/ (scripts,
// styles, and uPlot in assets/vendor/).
func AdminFS() fs.FS {
	sub, _ := fs.Sub(admin, "admin")
	return sub
}
