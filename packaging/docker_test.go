package packaging_test

import (
	"encoding/json"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/internal/testaddr"
)

// No Docker engine runs where these tests run: they check the Dockerfile
// and the compose file against the binary instead of building an image.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, COPY, ...
	args string
}

// stages reads the Dockerfile: the instructions of each stage.
func stages(t *testing.T) [][]instruction {
	t.Helper()
	text := strings.ReplaceAll(string(mustRead(t, "../Dockerfile")), "\\\n", " ")
	var st [][]instruction
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")}
		if in.cmd == "FROM" {
			st = append(st, nil)
		}
		if len(st) == 0 {
			t.Fatalf("Dockerfile: %s before FROM", in.cmd)
		}
		st[len(st)-1] = append(st[len(st)-1], in)
	}
	return st
}

// execForm decodes a JSON array argument (CMD ["a", "b"]).
func execForm(t *testing.T, in instruction, s string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil {
		t.Fatalf("%s %s: want the exec form (a JSON array): %v", in.cmd, in.args, err)
	}
	return argv
}

// TestDockerfile checks the image's build and runs its command and health
// check the way the container would: the files the Dockerfile copies in
// are taken from the repository, the binary is the one TestMain built.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	st := stages(t)
	if len(st) != 2 {
		t.Fatalf("%d stages, want 2 (build, run)", len(st))
	}
	var build string
	for _, in := range st[0] {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=$VERSION", "-X main.commit=$COMMIT", "-X main.date=$DATE", "./cmd/herald"} {
		if !strings.Contains(build, want) {
			t.Errorf("the build stage's go build lacks %q: %q", want, build)
		}
	}

	files := map[string]string{} // path in the image -> path here
	var entrypoint, command, health []string
	var user, expose string
	for _, in := range st[1] {
		switch in.cmd {
		case "FROM":
			if !strings.Contains(in.args, "distroless/static") && in.args != "scratch" {
				t.Errorf("final stage FROM %s, want distroless/static or scratch", in.args)
			}
		case "COPY":
			f := strings.Fields(in.args)
			if strings.HasPrefix(f[0], "--from=") {
				files[f[len(f)-1]] = bin // the binary of the build stage
			} else {
				files[f[1]] = filepath.Join("..", f[0])
			}
		case "USER":
			user = in.args
		case "EXPOSE":
			expose = in.args
		case "ENTRYPOINT":
			entrypoint = execForm(t, in, in.args)
		case "CMD":
			command = execForm(t, in, in.args)
		case "HEALTHCHECK":
			_, argv, ok := strings.Cut(in.args, "CMD ")
			if !ok {
				t.Fatalf("HEALTHCHECK %s: no CMD", in.args)
			}
			health = execForm(t, in, argv)
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" || strings.Trim(uid, "0123456789") != "" {
		t.Errorf("USER %q, want a numeric uid other than 0", user)
	}
	if expose != "8000" {
		t.Errorf("EXPOSE %q, want 8000 (the default listen port)", expose)
	}
	local := func(argv []string) []string {
		out := make([]string, len(argv))
		for i, a := range argv {
			if p, ok := files[a]; ok {
				a = p
			}
			out[i] = a
		}
		return out
	}
	serve := local(append(entrypoint, command...))
	if len(health) == 0 || health[0] != entrypoint[0] || len(health) < 2 || health[1] != "health" {
		t.Fatalf("HEALTHCHECK %q, want %s health", health, entrypoint[0])
	}
	if serve[0] != bin {
		t.Fatalf("ENTRYPOINT %q does not run the binary the build stage copied in", entrypoint)
	}

	// The container listens on :8000; here a free loopback port stands in,
	// through the environment, which the health check shares.
	addr := testaddr.Addr(t)
	env := []string{"HERALD_LISTEN=" + addr}
	s := startServer(t, addr, env, serve...)
	if out := mustRun(t, env, bin, local(health)[1:]...); strings.TrimSpace(out) != "ready" {
		t.Errorf("health check: %q", out)
	}
	s.stop(t)
	if out, err := run(t, env, bin, local(health)[1:]...); err == nil {
		t.Errorf("health check passed with the node stopped: %q", out)
	}
}

// ignored reports whether a .dockerignore pattern list excludes name. It
// knows the forms .dockerignore in this repository uses: path.Match
// patterns of the path or one of its parents, "**/" in front for any depth.
func ignored(patterns []string, name string) bool {
	parts := strings.Split(name, "/")
	for _, p := range patterns {
		anyDepth := strings.HasPrefix(p, "**/")
		p = strings.TrimPrefix(p, "**/")
		for i := range parts {
			for j := i + 1; j <= len(parts); j++ {
				if i > 0 && !anyDepth {
					break
				}
				if ok, _ := path.Match(p, strings.Join(parts[i:j], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

func TestDockerignore(t *testing.T) {
	t.Parallel()
	var patterns []string
	for _, l := range strings.Split(string(mustRead(t, "../.dockerignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && l[0] != '#' {
			if strings.HasPrefix(l, "!") {
				t.Fatalf(".dockerignore: exceptions (%s) are not checked here", l)
			}
			patterns = append(patterns, l)
		}
	}
	// What the image build needs: the module, the packages cmd/herald
	// imports (listed by go list), and the files the Dockerfile copies.
	need := []string{"go.mod", "go.sum", "packaging/herald.yaml", "web/static/index.html"}
	out := mustRun(t, nil, "go", "list", "-deps", "-f", "{{if .Module}}{{if not .Module.Replace}}{{.Dir}}{{end}}{{end}}", "../cmd/herald")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(out) {
		if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
			need = append(need, filepath.ToSlash(rel)+"/x.go")
		}
	}
	for _, n := range need {
		if ignored(patterns, n) {
			t.Errorf(".dockerignore excludes %s, which the image build needs", n)
		}
	}
	for _, n := range []string{".git/HEAD", "js/node_modules/x/index.js", "dist/herald-linux-amd64", "cmd/herald/herald.test"} {
		if !ignored(patterns, n) {
			t.Errorf(".dockerignore lets %s into the build context", n)
		}
	}
}

// composeFile is the part of a compose file the test reads.
type composeFile struct {
	Services map[string]struct {
		Image           string
		Build           any
		Command         []string
		Environment     map[string]string
		Volumes         []string
		Ports           []string
		DependsOn       []string `yaml:"depends_on"`
		StopGracePeriod string   `yaml:"stop_grace_period"`
	}
}

// TestCompose checks deploy/compose.yaml: three Herald nodes of the
// repository's image on NATS with JetStream, each with a config
// check-config accepts in the environment compose gives it.
func TestCompose(t *testing.T) {
	t.Parallel()
	var cf composeFile
	if err := yaml.Unmarshal(mustRead(t, "../deploy/compose.yaml"), &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	nats, ok := cf.Services["nats"]
	if !ok || !strings.Contains(strings.Join(nats.Command, " "), "--jetstream") {
		t.Errorf("no nats service with --jetstream: %+v", nats)
	}
	var nodes int
	ports := map[string]bool{}
	for name, s := range cf.Services {
		if !strings.HasPrefix(name, "herald") {
			continue
		}
		nodes++
		if s.Build == nil || len(s.DependsOn) != 1 || s.DependsOn[0] != "nats" || len(s.Ports) != 1 || ports[s.Ports[0]] {
			t.Errorf("%s: %+v", name, s)
		}
		ports[s.Ports[0]] = true
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil || grace < 15*time.Second {
			t.Errorf("%s: stop_grace_period %q, want drain_timeout (10s) + 5s or more", name, s.StopGracePeriod)
		}
		var config string
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(strings.TrimSuffix(v, ":ro"), ":")
			if dst == "/etc/herald/herald.yaml" {
				config = filepath.Join("../deploy", src)
			}
		}
		if len(s.Command) != 3 || s.Command[0] != "serve" || s.Command[1] != "--config" || s.Command[2] != "/etc/herald/herald.yaml" || config == "" {
			t.Fatalf("%s: command %q with volumes %q: want serve --config on a mounted file", name, s.Command, s.Volumes)
		}
		// ${VAR:?message} is the user's value; any will do here.
		var env []string
		for k, v := range s.Environment {
			env = append(env, k+"="+regexp.MustCompile(`\$\{[^}]*\}`).ReplaceAllString(v, "test-value"))
		}
		out := mustRun(t, env, bin, "check-config", config)
		for _, want := range []string{"type: nats", "- nats://nats:4222", "token_secret: <redacted>", "- <redacted>"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: effective config lacks %q:\n%s", name, want, out)
			}
		}
	}
	if nodes != 3 {
		t.Errorf("%d Herald nodes, want 3", nodes)
	}
}
