// Package packaging holds what installs Herald, and the tests that check
// it: the Debian package's files (nfpm.yaml, herald.service, herald.yaml,
// scripts/), built by the separate module mkdeb with "make deb"; and the
// tests of the Dockerfile and deploy/compose.yaml at the repository's top.
//
// The package has no code: its tests build the herald binary and the
// package, check every file against the binary (check-config, health),
// and, as root on a machine with dpkg, install the package and run the
// service as its user (TestDebInstall).
package packaging
