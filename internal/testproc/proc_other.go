//go:build !linux

package testproc

import "os/exec"

func dieWithTest(*exec.Cmd) {}
