package main

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/heraldhq/herald"
)

func TestBuildInfo(t *testing.T) {
	t.Parallel()
	vcs := []debug.BuildSetting{
		{Key: "-trimpath", Value: "true"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "bec6ea163ca2e0e8a3d2d0b7c0b1f9f1d9e7a1b2"},
		{Key: "vcs.time", Value: "2026-11-29T08:45:53Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	goVer := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name                  string
		version, commit, date string
		settings              []debug.BuildSetting
		want                  string
	}{
		{"nothing known", "", "", "", nil,
			"herald " + herald.Version + " (" + goVer + ")"},
		{"from VCS", "", "", "", vcs,
			"herald " + herald.Version + " (commit bec6ea163ca2-dirty, committed 2026-11-29T08:45:53Z, " + goVer + ")"},
		{"stamped wins", "1.2.3", "0123456789ab", "2026-12-03T10:00:00Z", vcs,
			"herald 1.2.3 (commit 0123456789ab, built 2026-12-03T10:00:00Z, " + goVer + ")"},
		{"stamped version only", "1.2.3", "", "", nil,
			"herald 1.2.3 (" + goVer + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := newBuildInfo(tc.version, tc.commit, tc.date, tc.settings).String(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
