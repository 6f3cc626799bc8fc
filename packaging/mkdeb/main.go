// Command mkdeb builds the herald Debian package from packaging/nfpm.yaml
// with nfpm (github.com/goreleaser/nfpm) as a library:
//
//	go -C packaging/mkdeb run . -version 0.1.0 -arch amd64 -binary dist/herald-linux-amd64 -out dist
//
// It prints the path of the package it wrote. It is a module of its own
// so that nfpm and its dependencies stay out of Herald's go.mod.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
)

func main() {
	config := flag.String("config", "../nfpm.yaml", "nfpm configuration")
	version := flag.String("version", "", "package version (required)")
	arch := flag.String("arch", "", "Go architecture: amd64, arm64 (required)")
	binary := flag.String("binary", "", "the herald binary built for -arch (required)")
	out := flag.String("out", ".", "directory to write the package to")
	flag.Parse()
	path, err := build(*config, *version, *arch, *binary, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func build(config, version, arch, binary, out string) (string, error) {
	if version == "" || arch == "" || binary == "" {
		return "", errors.New("-version, -arch and -binary are required")
	}
	// The configuration's relative paths are relative to its directory.
	var err error
	if binary, err = filepath.Abs(binary); err != nil {
		return "", err
	}
	if out, err = filepath.Abs(out); err != nil {
		return "", err
	}
	if err := os.Chdir(filepath.Dir(config)); err != nil {
		return "", err
	}
	vars := map[string]string{"VERSION": version, "ARCH": arch, "BINARY": binary}
	var unknown []string
	cfg, err := nfpm.ParseFileWithEnvMapping(filepath.Base(config), func(name string) string {
		v, ok := vars[name]
		if !ok {
			unknown = append(unknown, name)
		}
		return v
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", config, err)
	}
	// NFPM_*PASSPHRASE are always looked up (for signing, unused here).
	unknown = withoutPrefix(unknown, "NFPM_")
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return "", fmt.Errorf("%s: unknown variables %s", config, strings.Join(unknown, ", "))
	}
	if err := cfg.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", config, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	path := filepath.Join(out, deb.Default.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	info.Target = path
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", err
	}
	return path, f.Close()
}

func withoutPrefix(names []string, prefix string) []string {
	var keep []string
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			keep = append(keep, n)
		}
	}
	return keep
}
