package main

import (
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/heraldhq/herald"
)

// version, commit and date describe the build. The release build stamps
// them (make release):
//
//	go build -ldflags "-X main.version=0.1.0 -X main.commit=0123abcd -X main.date=2026-12-03T10:00:00Z"
//
// Left empty, version is herald.Version and commit and date come from the
// VCS information the go command embeds when it builds from a checkout
// (the commit's own time then stands for the date).
var (
	version string
	commit  string
	date    string
)

// buildInfo is what `herald version` reports.
type buildInfo struct {
	Version string
	Commit  string // "" if unknown; a "-dirty" suffix marks uncommitted changes
	Date    string // RFC 3339; "" if unknown
	Stamped bool   // Date is the build date (else the commit's time)
	Go      string // Go version, OS and architecture
}

// currentBuild is the build of this binary.
func currentBuild() buildInfo {
	var settings []debug.BuildSetting
	if bi, ok := debug.ReadBuildInfo(); ok {
		settings = bi.Settings
	}
	return newBuildInfo(version, commit, date, settings)
}

// newBuildInfo combines the stamped values with the VCS settings of the
// embedded build information: each stamped value wins over its setting.
func newBuildInfo(version, commit, date string, settings []debug.BuildSetting) buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, Stamped: date != "",
		Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if b.Version == "" {
		b.Version = herald.Version
	}
	var rev, at string
	var modified bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if b.Commit == "" && rev != "" {
		b.Commit = rev[:min(12, len(rev))]
		if modified {
			b.Commit += "-dirty"
		}
	}
	if b.Date == "" {
		b.Date = at
	}
	return b
}

// String is one line: "herald 0.1.0 (commit 0123456789ab, built
// 2026-12-03T10:00:00Z, go1.26.8 linux/amd64)"; unknown parts are left out.
func (b buildInfo) String() string {
	var parts []string
	if b.Commit != "" {
		parts = append(parts, "commit "+b.Commit)
	}
	if b.Date != "" {
		if b.Stamped {
			parts = append(parts, "built "+b.Date)
		} else {
			parts = append(parts, "committed "+b.Date)
		}
	}
	parts = append(parts, b.Go)
	return "herald " + b.Version + " (" + strings.Join(parts, ", ") + ")"
}

func versionString() string { return currentBuild().String() }
