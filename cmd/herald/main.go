// Command herald is the Herald server and its tools: serve, sub, pub,
// token, check-config, health, bench.
package main

import (
	"fmt"
	"os"
)

const usage = `herald: a real-time messaging server

Usage:
  herald serve [--config FILE] [--listen ADDR] [--dev] [--echo]   run a node
        [--broker URL]                                            share state through NATS or Redis
        [--cluster-listen ADDR --cluster-peers ADDR,...]          or form a cluster with embedded NATS
  herald sub [--url URL] [--token T | --key K] [--recover FILE] [CHANNEL...]  print publications and pushes as JSON lines
  herald pub [--url URL] [--token T] CHANNEL DATA                 publish as a client
  herald pub --api URL --key K CHANNEL DATA                       publish through the HTTP API
  herald token --secret S --user U [--ttl D]                      mint a connection token (HS256)
  herald check-config FILE                                        validate and print the effective config
  herald health [--url URL | --config FILE]                       exit 0 if the node is ready (/readyz), else 1
  herald bench [flags]                                            load-test a server
  herald version

Run "herald COMMAND --help" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(args)
	case "sub":
		err = runSub(args)
	case "pub":
		err = runPub(args)
	case "token":
		err = runToken(args)
	case "check-config":
		err = runCheckConfig(args)
	case "health":
		err = runHealth(args)
	case "bench":
		err = runBench(args)
	case "version", "--version":
		fmt.Println(versionString())
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "herald: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herald "+cmd+":", err)
		var ec exitCoder
		if asExitCoder(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}
