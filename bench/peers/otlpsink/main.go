// Command otlpsink is an OTLP/HTTP trace receiver that counts what it is
// sent and keeps nothing: the far end of a traced server in a benchmark
// (bench/peers/tracing.sh), so that the exporter runs as it would against
// a collector.
//
//	go run ./bench/peers/otlpsink -listen 127.0.0.1:4318
//
// On SIGTERM or SIGINT it prints the requests and bytes received.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4318", "address to listen on")
	flag.Parse()
	var requests, bytes atomic.Int64
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "otlpsink:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		requests.Add(1)
		bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
	})}
	go func() { _ = srv.Serve(ln) }()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	_ = srv.Close()
	fmt.Printf("otlpsink: %d requests, %d bytes\n", requests.Load(), bytes.Load())
}
